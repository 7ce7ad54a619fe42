//! `rvpt pr`: perturbation resistivity per perturbation, from a shell.

use super::{data_args::DataArgs, print_json, provenance, ModelArgs, PromptArgs, PERTURB_HELP};
use crate::attacks::Perturbation;
use crate::eval::resistivity;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompts: PromptArgs,
    #[command(flatten)]
    data_args: DataArgs,
    /// Image folder: one sub-folder per class (the class names give the logits' text features)
    #[arg(long = "data", alias = "images")]
    data: PathBuf,
    #[arg(long, default_value = "noise:0.03,blur:3,flip,badnet", help = PERTURB_HELP)]
    perturb: String,
    /// Also report the cosine of the [CLS] token after every block
    #[arg(long)]
    layerwise: bool,
    /// Seed of the perturbations' randomness (a trigger's: the one it was planted with)
    #[arg(long = "trigger-seed", alias = "seed", default_value_t = 7)]
    trigger_seed: u64,
    /// Print one JSON object on stdout (one line when stdout is not a terminal)
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> crate::Result<()> {
    let perturbations = Perturbation::parse_list(&args.perturb)?;
    let engine = args.model.load()?;
    for p in &perturbations {
        if let Perturbation::Trigger(t) = p {
            engine.weights.check_trigger(t, args.trigger_seed)?;
        }
    }
    let (folder, loader) = args.data_args.open(&args.data, engine.image_size())?;
    let prompts = args.prompts.load_prompts(&engine)?;
    let encoder = engine.encoder(prompts.as_ref())?;
    let zs = engine.zero_shot(
        encoder.as_ref(),
        folder.classes(),
        args.data_args.templates(),
    )?;
    let results = resistivity(
        &zs,
        &loader,
        &perturbations,
        args.trigger_seed,
        args.layerwise,
        crate::progress::Progress::shown(!args.json),
    )?;
    if args.json {
        return print_json(&serde_json::json!({
            "weights": engine.weights.source,
            "prompts": args.prompts.prompts,
            "images": args.data,
            "definition": "PR = E[cos(feature(x), feature(x'))] / E[cos(logits(x), logits(x'))]",
            "sample": args.data_args.sample_json(&loader),
            "perturbations": results,
            "provenance": provenance(Some(&engine)),
        }));
    }
    println!(
        "{:<16} {:>8} {:>10} {:>10} {:>7}",
        "perturbation", "PR", "cos feat", "cos logit", "n"
    );
    for res in &results {
        let r = &res.resistivity;
        println!(
            "{:<16} {:>8.4} {:>10.4} {:>10.4} {:>7}",
            res.perturbation, r.pr, r.feature_cosine, r.logit_cosine, r.samples
        );
        if let Some(profile) = &res.layerwise_cls_cosine {
            let cells: Vec<String> = profile.iter().map(|c| format!("{c:.3}")).collect();
            println!("{:<16} CLS cosine per block: {}", "", cells.join(" "));
        }
    }
    Ok(())
}
