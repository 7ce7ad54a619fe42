//! Benchmark (not a test): image-encoder throughput on ViT-B/32 shapes with random weights,
//! beside transformers' CLIPVisionModel in the same run, on the same device (bf16 and f16:
//! weights and activations in that dtype here, PyTorch's autocast there).
//!
//!     cargo run --release --example bench_vision -- [--batch 32] [--iters 5] [--python PATH]
//!         [--device cuda] [--dtype bf16]   (a CUDA build: `--features cuda`)
//!
//! `--python` names an interpreter with torch + transformers; without it only rvpt is timed.

mod common;
use common::arg;

use candle_core::{DType, Tensor};
use std::time::Instant;

// Large short-lived activations: mimalloc reuses them instead of faulting fresh pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> rvpt::Result<()> {
    rvpt::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let batch: usize = arg(&args, "--batch", 32);
    let iters: usize = arg(&args, "--iters", 5);
    let python: Option<String> = arg(&args, "--python", String::new()).into();
    let device_name: String = arg(&args, "--device", "cpu".to_string());
    let dtype_name: String = arg(&args, "--dtype", "f32".to_string());
    let device = rvpt::device::parse_device(&device_name)?;
    let dtype = rvpt::device::parse_dtype(&dtype_name)?;
    let threads = candle_core::utils::get_num_threads();

    let model = common::random_clip(dtype, &device)?.vision;
    let x = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), &device)?.to_dtype(dtype)?;
    // Reading one number back waits for the device's queued work.
    let run = || -> rvpt::Result<f32> {
        let y = model.forward(&x)?;
        Ok(y.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?)
    };
    run()?; // warm-up
    let mut times = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let ours = batch as f64 / median;
    println!(
        "rvpt (candle 0.11.1, {device_name}, {dtype_name}, {threads} threads): batch {batch}, median {median:.3}s, {ours:.1} images/s"
    );

    if let Some(py) = python.filter(|p| !p.is_empty()) {
        let extra = ["--device", &device_name, "--dtype", &dtype_name];
        let v = common::torch_benchmark(&py, "vision_torch.py", batch, iters, &extra)?;
        let theirs = v["images_per_s"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{} ({}, {} threads): median {:.3}s, {theirs:.1} images/s",
            v["impl"].as_str().unwrap_or("torch"),
            v["blas"].as_str().unwrap_or("?"),
            v["threads"],
            v["median_s"].as_f64().unwrap_or(f64::NAN)
        );
        println!("ratio rvpt/torch: {:.2}x", ours / theirs);
    }
    Ok(())
}
