//! Writes a grid of toy-world samples (one row per class) as a PNG and prints their captions.
//!
//!     cargo run --release --example toy_world -- grid.png [--size 32] [--seed 0] [--per-class 8] [--zoom 4]
//!
//! `--zoom` enlarges each pixel into a block (nearest neighbour), so what is seen is exactly what
//! the model gets at `--size` pixels.

use image::{Rgb, RgbImage};
use rvpt::toy::{ToyWorld, CLASSES};
use std::path::PathBuf;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> rvpt::Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| rvpt::Error::Invalid(format!("{name} needs a valid value"))),
    }
}

fn main() -> rvpt::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .ok_or_else(|| {
            rvpt::Error::Invalid(
                "usage: toy_world OUT.png [--size 32] [--seed 0] [--per-class 8] [--zoom 4]".into(),
            )
        })?;
    let size: u32 = arg(&args, "--size", 32)?;
    let seed: u64 = arg(&args, "--seed", 0)?;
    let per_class: u32 = arg(&args, "--per-class", 8)?;
    let zoom: u32 = arg(&args, "--zoom", 4)?.max(1);
    let world = ToyWorld::new(size, seed)?;

    let (tile, gap) = (size * zoom, 2);
    let classes = CLASSES.len() as u32;
    let mut grid = RgbImage::from_pixel(
        per_class * (tile + gap) + gap,
        classes * (tile + gap) + gap,
        Rgb([255, 255, 255]),
    );
    for class in 0..classes {
        println!("{}:", CLASSES[class as usize]);
        for col in 0..per_class {
            // Class is index % 10, so this walks the class's samples in order.
            let s = world.sample(class as u64 + classes as u64 * col as u64);
            println!("  {:>4}  {}", s.index, s.caption);
            let (x0, y0) = (gap + col * (tile + gap), gap + class * (tile + gap));
            for (x, y, px) in s.image.enumerate_pixels() {
                for dy in 0..zoom {
                    for dx in 0..zoom {
                        grid.put_pixel(x0 + x * zoom + dx, y0 + y * zoom + dy, *px);
                    }
                }
            }
        }
    }
    grid.save(&out)
        .map_err(|e| rvpt::Error::Invalid(format!("cannot write {}: {e}", out.display())))?;
    println!("wrote {}", out.display());
    Ok(())
}
