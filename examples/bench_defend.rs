//! Benchmark (not a test): the defence a user waits for, on ImageNet shapes. `classes` x `shots`
//! synthetic 224 px PNGs (default 1,000 x 16, as ImageNet 16-shot), a random ViT-B/32, and
//! `rvpt::train::rvpt::fit` in cache mode (`--augment none`: decode, preprocess, frozen prefix
//! and targets once, then only the prompted blocks per step) for `--timed-epochs` epochs. Prints
//! the setup (decoding + cache) and per-epoch seconds and extrapolates to `--epochs` (50, the
//! paper's), beside `benches/defend_torch.py` on the same images, device and dtype.
//!
//!     cargo run --release --example bench_defend -- [--classes 1000] [--shots 16]
//!         [--timed-epochs 2] [--epochs 50] [--device cuda] [--dtype bf16] [--python PATH]
//!         [--images DIR]   (reuses DIR's images when it already holds this shape)
//!
//! Not included: encoding the class names with the text tower (one forward of `classes` short
//! sequences; the class features are drawn at random here), and evaluation.

mod common;
use common::arg;

use candle_core::Tensor;
use rvpt::train::rvpt::{fit, DeepPrompts, FitState, RvptConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Writes `classes` x `shots` 224 px PNGs under `dir/<class>/`: a class colour with seeded
/// per-image stripes, so that images differ and compress like photographs do not (the decoder
/// does real work). Returns (path, class) pairs; existing files of the right names are kept.
fn synthetic_images(
    dir: &Path,
    classes: usize,
    shots: usize,
) -> rvpt::Result<Vec<(PathBuf, usize)>> {
    use rayon::prelude::*;
    let samples: Vec<(PathBuf, usize)> = (0..classes * shots)
        .map(|i| {
            let (c, s) = (i / shots, i % shots);
            (
                dir.join(format!("class{c:04}")).join(format!("{s:02}.png")),
                c,
            )
        })
        .collect();
    samples
        .par_iter()
        .enumerate()
        .try_for_each(|(i, (path, c))| {
            let (c, s) = (*c, i % shots);
            if path.exists() {
                return Ok(());
            }
            let folder = path.parent().expect("a class folder");
            std::fs::create_dir_all(folder).map_err(|e| rvpt::Error::io(folder, e))?;
            let seed = (c * 131 + s * 7) as u32;
            let img = image::RgbImage::from_fn(224, 224, |x, y| {
                let v = (x * (1 + seed % 5) + y * (1 + seed % 3) + seed) % 256;
                image::Rgb([
                    (c * 37 % 256) as u8,
                    v as u8,
                    ((c * 11 + s * 19) % 256) as u8,
                ])
            });
            img.save(path)
                .map_err(|e| rvpt::Error::Invalid(format!("{}: {e}", path.display())))
        })?;
    Ok(samples)
}

fn main() -> rvpt::Result<()> {
    rvpt::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let classes: usize = arg(&args, "--classes", 1000);
    let shots: usize = arg(&args, "--shots", 16);
    let timed: usize = arg(&args, "--timed-epochs", 2);
    let epochs: usize = arg(&args, "--epochs", 50);
    let python: String = arg(&args, "--python", String::new());
    let device_name: String = arg(&args, "--device", "cpu".to_string());
    let dtype_name: String = arg(&args, "--dtype", "f32".to_string());
    let images: String = arg(&args, "--images", String::new());
    let device = rvpt::device::parse_device(&device_name)?;
    let dtype = rvpt::device::parse_dtype(&dtype_name)?;
    if timed == 0 {
        return Err(rvpt::Error::Invalid(
            "--timed-epochs must be at least 1".into(),
        ));
    }

    let tmp;
    let dir = if images.is_empty() {
        tmp = tempfile::tempdir().map_err(|e| rvpt::Error::Invalid(e.to_string()))?;
        tmp.path().to_path_buf()
    } else {
        PathBuf::from(&images)
    };
    let t = Instant::now();
    let samples = synthetic_images(&dir, classes, shots)?;
    eprintln!(
        "{} images in {} ({:.1} s to write, not timed)",
        samples.len(),
        dir.display(),
        t.elapsed().as_secs_f64()
    );

    let model = common::random_clip(dtype, &device)?;
    let text = rvpt::model::ops::l2_normalize(&Tensor::randn(0f32, 1.0, (classes, 512), &device)?)?;
    let cfg = RvptConfig {
        epochs: timed,
        augment: false,
        ..RvptConfig::default()
    };
    let blocks = cfg.blocks.resolve(12)?;
    let state = FitState::new(DeepPrompts::init(
        blocks, cfg.length, 768, cfg.seed, &device,
    )?);
    let t = Instant::now();
    let state = fit(
        &model,
        &text,
        &samples,
        &cfg,
        state,
        true,
        rvpt::progress::Progress::Shown,
        &mut |_| Ok(()),
    )?;
    device.synchronize()?;
    let total = t.elapsed().as_secs_f64();
    let epoch_s: Vec<f64> = state.logs.iter().map(|l| l.seconds).collect();
    let setup = total - epoch_s.iter().sum::<f64>();
    // The first epoch may pay one-off costs (kernel loading); the last is the steady state.
    let steady = *epoch_s.last().expect("at least one epoch");
    let projected = setup + epochs as f64 * steady;
    let n = samples.len();
    println!(
        "rvpt ({device_name}, {dtype_name}, {} threads): {classes} classes x {shots} shots = {n} images; setup (decode + cache) {setup:.1} s; epochs {}; {epochs} epochs projected {projected:.0} s ({:.1} min); {:.0} images/s cached, {:.0} samples/s trained",
        candle_core::utils::get_num_threads(),
        epoch_s.iter().map(|s| format!("{s:.1} s")).collect::<Vec<_>>().join(", "),
        projected / 60.0,
        n as f64 / setup,
        n as f64 / steady,
    );
    if !python.is_empty() {
        let threads = candle_core::utils::get_num_threads().to_string();
        let (c, s, te, e) = (
            classes.to_string(),
            shots.to_string(),
            timed.to_string(),
            epochs.to_string(),
        );
        let dir_s = dir.display().to_string();
        let v = common::run_python(
            &python,
            "defend_torch.py",
            &[
                "--images",
                &dir_s,
                "--classes",
                &c,
                "--shots",
                &s,
                "--timed-epochs",
                &te,
                "--epochs",
                &e,
                "--device",
                &device_name,
                "--dtype",
                &dtype_name,
                "--threads",
                &threads,
            ],
        )?;
        let theirs = v["projected_s"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{}: setup {:.1} s; epochs {}; {epochs} epochs projected {theirs:.0} s ({:.1} min)",
            v["impl"].as_str().unwrap_or("torch"),
            v["setup_s"].as_f64().unwrap_or(f64::NAN),
            v["epoch_s"],
            theirs / 60.0
        );
        println!(
            "ratio (projected time, torch/rvpt): {:.2}x",
            theirs / projected
        );
    }
    Ok(())
}
