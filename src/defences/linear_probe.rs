//! Linear Probe, as the RVPT paper ran it: a linear head on the frozen (unit) image embeddings of
//! the k shots, trained by SGD (lr 0.01, momentum 0.9, batch 32, 40 epochs, constant lr). It
//! replaces the zero-shot head, so the defended model is evaluated as a classifier.

use crate::data::{shuffled, Loader, Transform};
use crate::error::{Error, Result};
use crate::eval::{Classifier, LinearHead};
use crate::optim::{Optimizer, Sgd, SgdConfig};
use candle_core::{DType, Device, Tensor, Var};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinearProbeConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub seed: u64,
}

impl Default for LinearProbeConfig {
    fn default() -> Self {
        Self {
            epochs: 40,
            batch_size: 32,
            lr: 0.01,
            momentum: 0.9,
            seed: 0,
        }
    }
}

/// Unit image embeddings (N, projection_dim) f32 of `samples` through `classifier`'s encoder
/// (the plain model, or a prompted one), preprocessed as at evaluation.
pub fn embeddings(
    classifier: &Classifier,
    samples: &[(PathBuf, usize)],
    image_size: u32,
) -> Result<Tensor> {
    let loader = Loader::new(
        samples.to_vec(),
        Transform::eval(image_size),
        64,
        &Device::Cpu,
    )?;
    let mut out = Vec::new();
    for batch in loader.all()? {
        let batch = batch?;
        let pixels = classifier.pixels(&batch.images)?;
        let features = classifier.encoder.features(&pixels)?;
        out.push(classifier.embed(&features)?.to_dtype(DType::F32)?);
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// Fits `classes` logits `x Wᵀ + b` to `labels` by cross-entropy, W and b from zero (the problem
/// is convex, so the start only sets the path). `x` is (N, D); the head lives on `x`'s device.
pub fn fit(
    x: &Tensor,
    labels: &[usize],
    classes: usize,
    cfg: &LinearProbeConfig,
) -> Result<LinearHead> {
    let (n, dim) = x.dims2()?;
    if n == 0 || n != labels.len() {
        return Err(Error::Invalid(format!(
            "linear probe: {n} feature rows for {} labels",
            labels.len()
        )));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
        return Err(Error::Invalid(format!(
            "linear probe: label {bad} is outside the {classes} classes"
        )));
    }
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(Error::Invalid(
            "linear probe: epochs and batch size must be at least 1".into(),
        ));
    }
    let device = x.device();
    let x = x.to_dtype(DType::F32)?;
    let weight = Var::zeros((classes, dim), DType::F32, device)?;
    let bias = Var::zeros(classes, DType::F32, device)?;
    let mut opt = Sgd::new(
        vec![weight.clone(), bias.clone()],
        SgdConfig {
            lr: cfg.lr,
            momentum: cfg.momentum,
            ..SgdConfig::default()
        },
    )?;
    let all: Vec<usize> = (0..n).collect();
    for epoch in 0..cfg.epochs {
        for chunk in shuffled(&all, cfg.seed, epoch as u64).chunks(cfg.batch_size) {
            let idx: Vec<u32> = chunk.iter().map(|&i| i as u32).collect();
            let idx = Tensor::new(idx.as_slice(), device)?;
            let xb = x.index_select(&idx, 0)?;
            let yb: Vec<u32> = chunk.iter().map(|&i| labels[i] as u32).collect();
            let yb = Tensor::new(yb.as_slice(), device)?;
            let logits = xb
                .matmul(&weight.as_tensor().t()?)?
                .broadcast_add(bias.as_tensor())?;
            let loss = candle_nn::loss::cross_entropy(&logits, &yb)?;
            opt.backward_step(&loss)?;
        }
    }
    Ok(LinearHead {
        weight: weight.as_tensor().detach(),
        bias: bias.as_tensor().detach(),
    })
}
