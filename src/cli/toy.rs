//! `rvpt toy`: writes a split of the toy world as an image folder (+ captions.csv), the data the
//! embedded toy models are evaluated and defended on.

use crate::toy::{lab::TEST_START, world::CLASSES, ToyWorld};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Output directory (one sub-folder per class, captions.csv)
    #[arg(long)]
    out: PathBuf,
    /// test (indices from 1,000,000) or train (from 0)
    #[arg(long, default_value = "test", value_parser = ["test", "train"])]
    split: String,
    /// Images per class
    #[arg(long, default_value_t = 100)]
    per_class: usize,
    /// Image side in pixels (the toy models use 32)
    #[arg(long, default_value_t = 32)]
    size: u32,
    /// World seed (the toy models were trained on seed 0)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object on stdout (one line when stdout is not a terminal)
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> crate::Result<()> {
    let start = if args.split == "test" { TEST_START } else { 0 };
    let written = ToyWorld::new(args.size, args.seed)?.write_image_folder(
        &args.out,
        start,
        args.per_class,
    )?;
    if args.json {
        return super::print_json(&serde_json::json!({
            "out": args.out,
            "split": args.split,
            "first_index": start,
            "per_class": args.per_class,
            "size": args.size,
            "seed": args.seed,
            "images": written.len(),
            "classes": CLASSES,
            "captions": args.out.join("captions.csv"),
            "provenance": super::provenance(None),
        }));
    }
    println!(
        "wrote {} images ({} per class, {} split) to {}",
        written.len(),
        args.per_class,
        args.split,
        args.out.display()
    );
    Ok(())
}
