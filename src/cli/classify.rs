//! `rvpt classify`: zero-shot top-k labels per image.

use super::{print_json, provenance, ModelArgs, PromptArgs};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompts: PromptArgs,
    /// Comma-separated class names, e.g. "cat,dog,coffee mug"
    #[arg(long)]
    labels: String,
    /// How many labels to show per image
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Print one JSON object on stdout (one line when stdout is not a terminal)
    #[arg(long)]
    json: bool,
    /// Image files (JPEG, PNG, WebP)
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(args: Args) -> crate::Result<()> {
    let labels = crate::text::parse_labels(&args.labels)?;
    let engine = args.model.load()?;
    let prompts = args.prompts.load_prompts(&engine)?;
    let encoder = engine.encoder(prompts.as_ref())?;
    let predictions = engine.classify(encoder.as_ref(), &args.images, &labels, args.top_k)?;
    if args.json {
        return print_json(&serde_json::json!({
            "weights": engine.weights.source,
            "prompts": args.prompts.prompts,
            "template": crate::text::CLASS_TEMPLATE,
            "predictions": predictions,
            "provenance": provenance(Some(&engine)),
        }));
    }
    for p in &predictions {
        println!("{}", p.image.display());
        for (label, prob) in &p.top {
            println!("  {:>6.2}%  {label}", prob * 100.0);
        }
    }
    Ok(())
}
