//! `rvpt eval`: clean accuracy and, with a trigger, attack success rate on an image folder.

use super::{
    data_args::{DataArgs, TemplateSetArgs},
    print_json, provenance, ModelArgs, PromptArgs, TRIGGER_HELP,
};
use crate::attacks::Trigger;
use crate::eval::{evaluate, Attack};
use crate::metrics::AsrConvention;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompts: PromptArgs,
    #[command(flatten)]
    data_args: DataArgs,
    #[command(flatten)]
    templates: TemplateSetArgs,
    /// Image folder: one sub-folder per class
    #[arg(long = "data", alias = "images")]
    data: PathBuf,
    #[arg(long, requires = "target", help = TRIGGER_HELP)]
    trigger: Option<String>,
    /// The attacker's target class (a class name of the dataset)
    #[arg(long)]
    target: Option<String>,
    /// ASR counts every triggered image, not only those outside the target class
    #[arg(long)]
    asr_all: bool,
    /// Seed of the trigger's randomness (fixed patterns, warp fields, per-image draws): the one
    /// it was planted with
    #[arg(long = "trigger-seed", alias = "seed", default_value_t = 7)]
    trigger_seed: u64,
    /// Print one JSON object on stdout (one line when stdout is not a terminal)
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> crate::Result<()> {
    let trigger = args.trigger.as_deref().map(Trigger::parse).transpose()?;
    let engine = args.model.load()?;
    if let Some(t) = &trigger {
        engine.weights.check_trigger(t, args.trigger_seed)?;
    }
    let (folder, loader) = args.data_args.open(&args.data, engine.image_size())?;
    let prompts = args.prompts.load_prompts(&engine)?;
    let encoder = engine.encoder(prompts.as_ref())?;
    let zs = engine.zero_shot(
        encoder.as_ref(),
        folder.classes(),
        args.data_args.templates(),
    )?;
    let attack = match (&trigger, &args.target) {
        (Some(trigger), Some(target)) => Some(Attack {
            trigger,
            target: folder.class_index(target)?,
            seed: args.trigger_seed,
            convention: if args.asr_all {
                AsrConvention::All
            } else {
                AsrConvention::ExcludeTarget
            },
        }),
        _ => None,
    };
    let report = evaluate(
        &zs,
        &loader,
        attack.as_ref(),
        crate::progress::Progress::shown(!args.json),
    )?;
    let by_template = args.templates.evaluate(
        &engine,
        encoder.as_ref(),
        folder.classes(),
        &loader,
        attack.as_ref(),
        !args.json,
    )?;
    if args.json {
        return print_json(&serde_json::json!({
            "by_template": TemplateSetArgs::json(&by_template),
            "weights": engine.weights.source,
            "prompts": args.prompts.prompts,
            "data": args.data,
            "templates": args.data_args.templates(),
            "sample": args.data_args.sample_json(&loader),
            "report": report,
            "provenance": provenance(Some(&engine)),
        }));
    }
    println!("weights  {}", engine.weights.source);
    println!("CA       {}", report.clean_accuracy.display_percent());
    if let (Some(asr), Some(t)) = (&report.attack_success_rate, &report.trigger) {
        println!(
            "ASR      {}  trigger {t}, target {}, {}",
            asr.display_percent(),
            report.target.as_deref().unwrap_or("?"),
            report.asr_convention.unwrap_or_default()
        );
    }
    for s in &report.skipped {
        eprintln!("skipped  {s}");
    }
    TemplateSetArgs::print(&by_template);
    Ok(())
}
