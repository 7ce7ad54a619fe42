//! `rvpt attack optimise-patch`: the BadCLIP-style optimised patch trigger.

use super::ModelArgs;
use crate::attacks::optimise::{optimise_patch, PatchConfig};
use crate::attacks::patch::PatchFile;
use crate::data::{ImageFolder, Loader, Transform};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Image folder (one sub-folder per class) the patch is optimised on
    #[arg(long = "data", alias = "images")]
    data: PathBuf,
    /// Target class name
    #[arg(long)]
    target: String,
    /// Output patch file (safetensors, tensor `patch`); use it as `--trigger patch:FILE`
    #[arg(long)]
    out: PathBuf,
    /// Patch side in pixels (16 at 224 px)
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Adam steps, one random batch each
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Adam learning rate (pixel values in [0, 1])
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// Images per step, drawn with replacement
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Use at most this many images
    #[arg(long, default_value_t = 512)]
    limit: usize,
    /// Seed of the initial random patch and of the batch draws
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object on stdout (one line when stdout is not a terminal): the settings
    /// and the loss of every step
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> crate::Result<()> {
    let engine = args.model.load()?;
    let folder = ImageFolder::open(&args.data, None)?;
    let mut samples = folder.samples().to_vec();
    samples.truncate(args.limit);
    let loader = Loader::new(
        samples,
        Transform::eval(engine.image_size()),
        256,
        &engine.device,
    )?;
    let images: Vec<_> = loader
        .all()?
        .map(|b| b.map(|b| b.images))
        .collect::<crate::Result<_>>()?;
    let images = candle_core::Tensor::cat(&images, 0)?.to_device(&engine.device)?;
    let text = crate::text::class_text_embeddings(
        &engine.model,
        &engine.tokenizer,
        std::slice::from_ref(&args.target),
        &engine.device,
    )?
    .get(0)?;
    let cfg = PatchConfig {
        size: args.size,
        steps: args.steps,
        lr: args.lr,
        batch_size: args.batch_size,
        seed: args.seed,
    };
    let result = optimise_patch(&engine.model, &text, &images, &cfg)?;
    PatchFile::save(&result.patch, &args.out)?;
    if args.json {
        return super::print_json(&serde_json::json!({
            "weights": engine.weights.source,
            "images": args.data,
            "used_images": images.dim(0)?,
            "target": args.target,
            "config": cfg,
            "loss_before": result.loss_before,
            "loss_after": result.loss_after,
            "losses": result.losses,
            "out": args.out,
            "provenance": super::provenance(Some(&engine)),
        }));
    }
    println!(
        "patch {}x{} optimised for \"{}\" over {} steps: 1 - cosine on all {} images {:.4} → {:.4}; saved to {}",
        args.size,
        args.size,
        crate::text::class_prompt(&args.target),
        result.losses.len(),
        images.dim(0)?,
        result.loss_before,
        result.loss_after,
        args.out.display()
    );
    Ok(())
}
