//! Benchmark (not a test): one RVPT training step on ViT-B/32 shapes with random weights
//! (prefix through blocks 0..6, frozen branch, 50 prompt tokens in blocks 6..12, CE + 2 FR,
//! backward, SGD), batch 32: samples/s, time per phase and peak memory, beside PyTorch in the
//! same run on the same device. `--dtype bf16|f16`: frozen weights and activations in that dtype,
//! prompts and SGD in f32 (mixed precision); PyTorch runs the same step under autocast.
//!
//!     cargo run --release --example bench_rvpt -- [--batch 32] [--iters 3] [--python PATH]
//!         [--device cuda:0] [--dtype bf16]  (a CUDA build: `--features cuda`)

mod common;
use common::arg;

use candle_core::Tensor;
use rvpt::optim::{Optimizer, Sgd, SgdConfig};
use rvpt::train::rvpt::{batch_loss, frozen_part, DeepPrompts, LossConfig, PromptedEncoder};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CPU time (user + system, all threads) this process has used so far, in seconds: steadier than
/// wall time when other jobs share the cores.
fn cpu_seconds() -> f64 {
    // Fields 14 and 15 of /proc/self/stat (after the parenthesised command name) are utime and
    // stime in clock ticks, 100 per second on Linux.
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

/// Wall and CPU seconds of one phase.
#[derive(Clone, Copy, Default)]
struct Spent {
    wall: f64,
    cpu: f64,
}

/// Runs one phase and waits for the device to finish it: on a GPU the ops only queue work, and
/// without the wait the next phase's clock would count this one's kernels.
fn timed<T>(
    spent: &mut Spent,
    dev: &candle_core::Device,
    f: impl FnOnce() -> rvpt::Result<T>,
) -> rvpt::Result<T> {
    let (t, c) = (Instant::now(), cpu_seconds());
    let out = f()?;
    dev.synchronize()?;
    spent.wall += t.elapsed().as_secs_f64();
    spent.cpu += cpu_seconds() - c;
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak resident memory of this process (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> rvpt::Result<()> {
    rvpt::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let batch: usize = arg(&args, "--batch", 32);
    let iters: usize = arg(&args, "--iters", 3);
    let python: String = arg(&args, "--python", String::new());
    let device: String = arg(&args, "--device", "cpu".to_string());
    let dtype_name: String = arg(&args, "--dtype", "f32".to_string());
    let dtype = rvpt::device::parse_dtype(&dtype_name)?;
    let dev = rvpt::device::parse_device(&device)?;
    let model = common::random_clip(dtype, &dev)?;
    let prompts = DeepPrompts::init(6..12, 50, 768, 0, &dev)?;
    let enc = PromptedEncoder::new(&model.vision, &prompts)?;
    let text = rvpt::model::ops::l2_normalize(&Tensor::randn(0f32, 1.0, (10, 512), &dev)?)?;
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let pixels = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), &dev)?.to_dtype(dtype)?;
    let sgd = SgdConfig {
        lr: 0.002,
        momentum: 0.9,
        dampening: 0.0,
        weight_decay: 5e-4,
        nesterov: false,
    };
    let mut opt = Sgd::new(prompts.vars.clone(), sgd)?;
    // Phases: the no-gradient frozen part, the prompted forward + loss, backward, SGD update.
    const PHASES: [&str; 4] = ["frozen", "forward", "backward", "sgd"];
    let mut step = || -> rvpt::Result<[Spent; 4]> {
        let mut s = [Spent::default(); 4];
        let frozen = timed(&mut s[0], &dev, || {
            frozen_part(&enc, &pixels, &LossConfig::default())
        })?;
        let parts = timed(&mut s[1], &dev, || {
            batch_loss(
                &model,
                &enc,
                &text,
                &frozen,
                &labels,
                &LossConfig::default(),
            )
        })?;
        let grads = timed(&mut s[2], &dev, || Ok(parts.total.backward()?))?;
        timed(&mut s[3], &dev, || opt.step(&grads))?;
        Ok(s)
    };
    step()?; // warm-up
    let mut runs = Vec::new();
    for _ in 0..iters {
        runs.push(step()?);
    }
    let total = |r: &[Spent; 4], f: fn(&Spent) -> f64| r.iter().map(f).sum::<f64>();
    let median_wall = median(runs.iter().map(|r| total(r, |s| s.wall)).collect());
    let median_cpu = median(runs.iter().map(|r| total(r, |s| s.cpu)).collect());
    let ours = batch as f64 / median_wall;
    println!(
        "rvpt (candle 0.11.1, {device}, {dtype_name}, {} threads): step {median_wall:.2}s ({median_cpu:.2} CPU-s), {ours:.2} samples/s, peak RSS {:.0} MB",
        candle_core::utils::get_num_threads(),
        peak_rss_mb()
    );
    let phases: Vec<String> = PHASES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let wall = median(runs.iter().map(|r| r[i].wall).collect());
            let cpu = median(runs.iter().map(|r| r[i].cpu).collect());
            format!("{name} {wall:.2}s ({cpu:.2} CPU-s)")
        })
        .collect();
    println!("  phases (medians): {}", phases.join(", "));
    if !python.is_empty() {
        let v = common::torch_benchmark(
            &python,
            "rvpt_torch.py",
            batch,
            iters,
            // The same device as ours (torch spells cpu, cuda and cuda:N the same way), or the
            // ratio would compare a GPU with a CPU.
            &["--device", &device, "--dtype", &dtype_name],
        )?;
        let theirs = v["samples_per_s"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{} ({}, {} threads): step {:.2}s ({:.2} CPU-s), {theirs:.2} samples/s, peak RSS {:.0} MB",
            v["impl"].as_str().unwrap_or("torch"),
            v["blas"].as_str().unwrap_or("?"),
            v["threads"],
            v["median_s"].as_f64().unwrap_or(f64::NAN),
            v["median_cpu_s"].as_f64().unwrap_or(f64::NAN),
            v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN)
        );
        println!("ratio rvpt/torch: {:.2}x", ours / theirs);
    }
    Ok(())
}
