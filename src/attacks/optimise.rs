//! Attacks that need the victim model's gradients: the PGD half of the label-consistent attack
//! and the BadCLIP-style optimised patch. The model's weights are plain tensors, so backward
//! reaches only the images or the patch.

use super::label_consistent::pgd_step;
use super::patch::{apply_patch, Placement};
use crate::error::{Error, Result};
use crate::model::{ops::l2_normalize, Clip};
use crate::optim::{AdamW, AdamWConfig, Optimizer};
use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng};

/// Unit image embeddings of [0, 1] images.
fn unit_embeds(model: &Clip, unit: &Tensor) -> Result<Tensor> {
    let pixels = crate::image::normalize_with(unit, &model.config().preprocess)?;
    Ok(l2_normalize(&model.image_embeds(&pixels)?)?)
}

/// L∞ PGD settings; the default is the label-consistent attack's: eps 8/255, 10 steps of 2/255.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PgdConfig {
    pub eps: f32,
    pub step: f32,
    pub iters: usize,
}

impl Default for PgdConfig {
    fn default() -> Self {
        PgdConfig {
            eps: 8.0 / 255.0,
            step: 2.0 / 255.0,
            iters: 10,
        }
    }
}

/// Untargeted L∞ PGD that pushes images away from their true class (Turner et al.): makes the
/// clean content hard to use, so a poisoned model leans on the trigger. `text`: (C, E) unit rows;
/// maximises the zero-shot cross-entropy of `labels` (indices into the rows of `text`).
pub fn pgd_away_from_labels(
    model: &Clip,
    text: &Tensor,
    images: &Tensor,
    labels: &[usize],
    cfg: &PgdConfig,
) -> Result<Tensor> {
    let (n, classes) = (images.dim(0)?, text.dim(0)?);
    if n != labels.len() {
        return Err(Error::Invalid(format!(
            "pgd_away_from_labels: {n} images for {} labels",
            labels.len()
        )));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
        return Err(Error::Invalid(format!(
            "pgd_away_from_labels: label {bad} is out of range for {classes} classes"
        )));
    }
    let targets = Tensor::from_vec(
        labels.iter().map(|&l| l as u32).collect::<Vec<_>>(),
        n,
        images.device(),
    )?;
    let scale = model.logit_scale()?.detach();
    let text = text.detach();
    pgd(model, images, cfg, |embeds| {
        let logits = embeds.matmul(&text.t()?)?.broadcast_mul(&scale)?;
        Ok(candle_nn::loss::cross_entropy(&logits, &targets)?)
    })
}

/// L∞ PGD that lowers the cosine between each image and one unit text embedding `text` (E,):
/// the label-consistent attack's perturbation when all its images are of the class `text` names.
pub fn pgd_away_from_text(
    model: &Clip,
    text: &Tensor,
    images: &Tensor,
    cfg: &PgdConfig,
) -> Result<Tensor> {
    let column = text.detach().flatten_all()?.unsqueeze(1)?;
    pgd(model, images, cfg, |embeds| {
        // Images are independent, so the batch mean only scales each gradient (sign unchanged).
        Ok(embeds.matmul(&column)?.mean_all()?.neg()?)
    })
}

/// `cfg.iters` ascent steps on `loss(unit image embeddings)` from `images`, within `cfg.eps` in
/// L∞ and [0, 1].
fn pgd(
    model: &Clip,
    images: &Tensor,
    cfg: &PgdConfig,
    loss: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let orig = images.detach();
    let mut x = orig.clone();
    for _ in 0..cfg.iters {
        let v = Var::from_tensor(&x)?;
        let grads = loss(&unit_embeds(model, v.as_tensor())?)?.backward()?;
        let g = grads
            .get(v.as_tensor())
            .ok_or_else(|| Error::Invalid("PGD: no gradient reached the images".into()))?;
        x = pgd_step(&x, g, &orig, cfg.eps, cfg.step)?;
    }
    Ok(x)
}

/// Settings of the BadCLIP-style patch optimisation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PatchConfig {
    pub size: usize,
    pub steps: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub seed: u64,
}

/// What [`optimise_patch`] returns.
#[derive(Debug, Clone)]
pub struct OptimisedPatch {
    /// (3, p, p) in [0, 1].
    pub patch: Tensor,
    /// The loss of each step's random batch.
    pub losses: Vec<f32>,
    /// The objective on all the images ([`patch_loss`]) with the initial (random) patch and
    /// with the optimised one: unlike the per-step losses, free of batch sampling noise.
    pub loss_before: f32,
    pub loss_after: f32,
}

/// The patch objective on all `images`: 1 - mean cosine between the patched images (patch at the
/// centre) and the unit (E,) text embedding `target_text`; in chunks of 64, without gradients.
pub fn patch_loss(
    model: &Clip,
    target_text: &Tensor,
    images: &Tensor,
    patch: &Tensor,
) -> Result<f32> {
    let target = target_text
        .to_dtype(DType::F32)?
        .flatten_all()?
        .unsqueeze(1)?;
    let n = images.dim(0)?;
    let mut total = 0f64;
    for start in (0..n).step_by(64) {
        let batch = images.narrow(0, start, 64.min(n - start))?;
        let patched = apply_patch(&batch, &patch.detach(), Placement::Centre)?;
        let cos = unit_embeds(model, &patched)?.matmul(&target)?;
        total += cos.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    }
    Ok((1.0 - total / n as f64) as f32)
}

/// Optimises a `size` x `size` patch, pasted at the image centre, so that patched images embed
/// close to `target_text` (a unit (E,) text embedding): Adam on 1 - mean cosine over random
/// batches (drawn with replacement), the patch kept in [0, 1].
pub fn optimise_patch(
    model: &Clip,
    target_text: &Tensor,
    images: &Tensor,
    cfg: &PatchConfig,
) -> Result<OptimisedPatch> {
    let n = images.dim(0)?;
    if n == 0 || cfg.size == 0 || cfg.batch_size == 0 {
        return Err(Error::Invalid(
            "patch optimisation needs images, a patch size and a batch size".into(),
        ));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let init: Vec<f32> = (0..3 * cfg.size * cfg.size).map(|_| rng.random()).collect();
    let patch = Var::from_tensor(&Tensor::from_vec(
        init,
        (3, cfg.size, cfg.size),
        images.device(),
    )?)?;
    let mut adam = AdamW::single(
        vec![patch.clone()],
        0.0,
        AdamWConfig {
            lr: cfg.lr,
            ..AdamWConfig::default()
        },
    )?;
    let target = target_text
        .to_dtype(DType::F32)?
        .flatten_all()?
        .unsqueeze(1)?;
    let loss_before = patch_loss(model, target_text, images, patch.as_tensor())?;
    let mut losses = Vec::with_capacity(cfg.steps);
    for _ in 0..cfg.steps {
        let idx: Vec<u32> = (0..cfg.batch_size.min(n))
            .map(|_| rng.random_range(0..n) as u32)
            .collect();
        let idx = Tensor::from_vec(idx, cfg.batch_size.min(n), images.device())?;
        let batch = images.index_select(&idx, 0)?;
        let patched = apply_patch(&batch, patch.as_tensor(), Placement::Centre)?;
        let cos = unit_embeds(model, &patched)?.matmul(&target)?;
        let loss = (1.0 - cos.mean_all()?)?;
        losses.push(loss.to_scalar::<f32>()?);
        adam.backward_step(&loss)?;
        patch.set(&patch.as_tensor().clamp(0f32, 1f32)?)?;
    }
    let patch = patch.as_tensor().detach();
    let loss_after = patch_loss(model, target_text, images, &patch)?;
    Ok(OptimisedPatch {
        patch,
        losses,
        loss_before,
        loss_after,
    })
}
