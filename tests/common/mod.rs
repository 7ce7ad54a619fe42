//! Helpers shared by the integration tests.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

pub fn load_tensors(rel: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(rel), &Device::Cpu).expect("fixture readable")
}

/// Largest absolute element difference; panics on a shape mismatch.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

pub fn mean_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The built `rvpt`, offline (no test may reach the hub).
pub fn rvpt_command() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_rvpt"));
    c.env("HF_HUB_OFFLINE", "1");
    c
}

/// Runs the built `rvpt` offline to its end.
pub fn rvpt_output(args: &[&str]) -> std::process::Output {
    rvpt_command().args(args).output().expect("rvpt runs")
}

/// Runs the built `rvpt` offline: (success, stdout, stderr).
pub fn run_rvpt(args: &[&str]) -> (bool, String, String) {
    let o = rvpt_output(args);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Lays `files` (name in the repo, source file) out under a hub cache as huggingface_hub does:
/// blobs named by digest, snapshot symlinks for commit `rev`, and `refs/main` holding it.
/// Returns the repo's folder.
pub fn hub_repo(cache: &Path, repo: &str, rev: &str, files: &[(&str, &Path)]) -> PathBuf {
    let folder = cache.join(format!("models--{}", repo.replace('/', "--")));
    let blobs = folder.join("blobs");
    let snap = folder.join("snapshots").join(rev);
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    std::fs::write(folder.join("refs/main"), rev).unwrap();
    for (name, src) in files {
        let digest = rvpt::weights::sha256_file(src).unwrap();
        std::fs::copy(src, blobs.join(&digest)).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{digest}"), snap.join(name)).unwrap();
    }
    folder
}
