//! `rvpt eval`: clean accuracy and, with a trigger, attack success rate on an image folder.

use super::{data_args::DataArgs, print_json, provenance, ModelArgs, PromptArgs, TRIGGER_HELP};
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
    /// Also report CA and ASR under these class templates, `|`-separated (each as --template),
    /// e.g. "openai80|a {} in the picture.": a backdoor bound to one sentence shows as an ASR
    /// that falls under the others
    #[arg(long)]
    asr_templates: Option<String>,
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
    let others = match &args.asr_templates {
        Some(spec) => crate::text::parse_template_set(spec)?,
        None => Vec::new(),
    };
    let by_template = others
        .iter()
        .map(|t| {
            let zs = engine.zero_shot(encoder.as_ref(), folder.classes(), t.clone())?;
            let r = evaluate(
                &zs,
                &loader,
                attack.as_ref(),
                crate::progress::Progress::shown(!args.json),
            )?;
            Ok((t.label(), r))
        })
        .collect::<crate::Result<Vec<_>>>()?;
    if args.json {
        let by_template: Vec<serde_json::Value> = by_template
            .iter()
            .map(|(t, r)| {
                serde_json::json!({
                    "template": t,
                    "clean_accuracy": r.clean_accuracy,
                    "attack_success_rate": r.attack_success_rate,
                })
            })
            .collect();
        return print_json(&serde_json::json!({
            "by_template": by_template,
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
    for (t, r) in &by_template {
        let asr = r
            .attack_success_rate
            .as_ref()
            .map_or(String::new(), |a| format!(", ASR {}", a.display_percent()));
        println!(
            "  under \"{t}\": CA {}{asr}",
            r.clean_accuracy.display_percent()
        );
    }
    Ok(())
}
