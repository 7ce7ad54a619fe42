//! Helpers the examples share (not an example itself: cargo only builds `examples/*.rs`).
#![allow(dead_code)] // each example uses a subset

/// The value after `--name`, parsed, or `default`.
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs a PyTorch reference benchmark in `benches/` with the same batch, iterations and threads
/// (and `extra` arguments, e.g. the device), and returns the JSON object of its last stdout line.
pub fn torch_benchmark(
    python: &str,
    script: &str,
    batch: usize,
    iters: usize,
    extra: &[&str],
) -> rvpt::Result<serde_json::Value> {
    let threads = candle_core::utils::get_num_threads().to_string();
    let (batch, iters) = (batch.to_string(), iters.to_string());
    let mut args = vec!["--batch", &batch, "--iters", &iters, "--threads", &threads];
    args.extend_from_slice(extra);
    run_python(python, script, &args)
}

/// Runs `benches/<script>` with `args` and returns the JSON object of its last stdout line. The
/// script is looked up under the working directory first (a binary carried to another machine
/// and run from the project root), then under the source tree this example was built from.
pub fn run_python(python: &str, script: &str, args: &[&str]) -> rvpt::Result<serde_json::Value> {
    let here = std::path::Path::new("benches").join(script);
    let path = if here.exists() {
        here
    } else {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("benches")
            .join(script)
    };
    let out = std::process::Command::new(python)
        .arg(&path)
        .args(args)
        .output()
        .map_err(|e| rvpt::Error::Invalid(format!("cannot run {python}: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim().lines().last().unwrap_or("")).map_err(|_| {
        rvpt::Error::Invalid(format!(
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    })
}

/// CLIP ViT-B/32 with random weights (N(0, 0.02)) in `dtype` on `device`. The text tower is not
/// used by prompt tuning (the benchmarks draw class features at random): its tensors are
/// zero-cost broadcast placeholders.
pub fn random_clip(
    dtype: candle_core::DType,
    device: &candle_core::Device,
) -> rvpt::Result<rvpt::model::Clip> {
    use candle_core::{DType, Tensor};
    let cfg = rvpt::model::ClipConfig::vit_base_patch32();
    let mut tensors = std::collections::HashMap::new();
    for (name, shape) in rvpt::model::expected_tensors(&cfg)? {
        let t = if name.starts_with("vision_model.")
            || name == "visual_projection.weight"
            || name == "logit_scale"
        {
            Tensor::randn(0f32, 0.02, shape, device)?
        } else {
            Tensor::zeros((), DType::F32, device)?.broadcast_as(shape)?
        };
        tensors.insert(name, t);
    }
    Ok(rvpt::model::Clip::new(
        candle_nn::VarBuilder::from_tensors(tensors, dtype, device),
        &cfg,
    )?)
}
