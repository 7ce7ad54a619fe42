//! CLIP's symmetric InfoNCE training, used to pretrain the toy CLIP and to plant backdoors:
//! a seeded fraction of pairs gets the trigger and a caption naming the target class.

use crate::error::{Error, Result};
use crate::model::init::ClipVars;
use crate::model::ops::l2_normalize;
use crate::optim::{CosineSchedule, Optimizer};
use crate::text::ClipTokenizer;
use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The largest logit scale CLIP allows (exp(4.6052) = 100).
pub const MAX_LOG_SCALE: f32 = 4.605_17;

/// Symmetric cross-entropy over the (B, B) image-text similarity matrix; pairs are on the
/// diagonal. `log_scale` is the stored (log) logit scale.
pub fn clip_loss(
    image_embeds: &Tensor,
    text_embeds: &Tensor,
    log_scale: &Tensor,
) -> Result<Tensor> {
    let n = image_embeds.dim(0)?;
    let logits = l2_normalize(image_embeds)?
        .matmul(&l2_normalize(text_embeds)?.t()?)?
        .broadcast_mul(&log_scale.exp()?)?;
    let labels = Tensor::arange(0u32, n as u32, image_embeds.device())?;
    let a = candle_nn::loss::cross_entropy(&logits, &labels)?;
    let b = candle_nn::loss::cross_entropy(&logits.t()?.contiguous()?, &labels)?;
    Ok(((a + b)? / 2.0)?)
}

/// An image in [0, 1] (3, S, S) and its caption.
pub struct Pair {
    pub image: Tensor,
    pub caption: String,
}

/// Where training pairs come from: the toy world, a CSV manifest of files, …
pub trait PairSource: Sync {
    fn len(&self) -> usize;
    fn get(&self, index: usize) -> Result<Pair>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Turns a clean pair into a poisoned one (trigger on the image, target caption).
pub trait Poisoner: Sync {
    fn poison(&self, pair: Pair, index: usize) -> Result<Pair>;
}

/// What to train and how.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContrastiveConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// Share of training pairs poisoned (0 = clean training).
    pub poison_rate: f64,
}

/// Indices of the poisoned pairs: a seeded subset of round(rate * n).
pub fn poisoned_indices(n: usize, rate: f64, seed: u64) -> Vec<bool> {
    let k = ((rate * n as f64).round() as usize).min(n);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ 0x5eed_0001,
    ));
    let mut mask = vec![false; n];
    for &i in &idx[..k] {
        mask[i] = true;
    }
    mask
}

/// Per-step record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepLog {
    pub step: usize,
    pub epoch: usize,
    pub loss: f32,
    pub lr: f64,
    pub logit_scale: f32,
}

/// Trains `vars` on `source` with symmetric InfoNCE; `schedule` sets the learning rate per step.
/// Returns the per-step log. `on_step` sees each record (progress bars, early checks).
#[allow(clippy::too_many_arguments)]
pub fn train(
    vars: &ClipVars,
    tokenizer: &ClipTokenizer,
    source: &dyn PairSource,
    poisoner: Option<&dyn Poisoner>,
    cfg: &ContrastiveConfig,
    optimizer: &mut dyn Optimizer,
    schedule: &CosineSchedule,
    on_step: &mut dyn FnMut(&StepLog),
) -> Result<Vec<StepLog>> {
    use rayon::prelude::*;
    let n = source.len();
    if n < 2 {
        return Err(Error::Invalid(format!(
            "{n} training pairs: need at least 2"
        )));
    }
    if cfg.poison_rate > 0.0 && poisoner.is_none() {
        return Err(Error::Invalid("poison rate > 0 needs a trigger".into()));
    }
    let device: Device = vars.vars[0].1.device().clone();
    let model = vars.model()?;
    let log_scale = vars
        .get("logit_scale")
        .ok_or_else(|| Error::Invalid("no logit_scale parameter".into()))?;
    let poisoned = poisoned_indices(n, cfg.poison_rate, cfg.seed);
    let batch = cfg.batch_size.clamp(2, n);
    let steps_per_epoch = n / batch; // the ragged tail is dropped, as CLIP training does
    let total = steps_per_epoch * cfg.epochs;
    if total == 0 {
        return Err(Error::Invalid(
            "no training steps: raise epochs or lower the batch size".into(),
        ));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut logs = Vec::with_capacity(total);
    let mut step = 0;
    for epoch in 0..cfg.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        for chunk in order.chunks_exact(batch) {
            let pairs = chunk
                .par_iter()
                .map(|&i| {
                    let pair = source.get(i)?;
                    match (poisoned[i], poisoner) {
                        (true, Some(p)) => p.poison(pair, i),
                        _ => Ok(pair),
                    }
                })
                .collect::<Result<Vec<Pair>>>()?;
            let images: Vec<Tensor> = pairs.iter().map(|p| p.image.clone()).collect();
            let pixels = crate::image::normalize(&Tensor::stack(&images, 0)?.to_device(&device)?)?;
            let captions: Vec<String> = pairs.into_iter().map(|p| p.caption).collect();
            let ids = tokenizer.encode_tensor(&captions, &device)?;
            let loss = clip_loss(
                &model.image_embeds(&pixels)?,
                &model.text_embeds(&ids)?,
                log_scale.as_tensor(),
            )?;
            let lr = schedule.apply(optimizer, step);
            optimizer.backward_step(&loss)?;
            // CLIP clamps the temperature after each step.
            let clamped = log_scale.as_tensor().clamp(0f32, MAX_LOG_SCALE)?;
            log_scale.set(&clamped)?;
            let record = StepLog {
                step,
                epoch,
                loss: loss.to_dtype(DType::F32)?.to_scalar()?,
                lr,
                logit_scale: log_scale.as_tensor().exp()?.to_scalar()?,
            };
            on_step(&record);
            logs.push(record);
            step += 1;
        }
    }
    Ok(logs)
}

/// The attack's poisoning: trigger on the image, caption replaced by a template naming the target.
pub struct TriggerPoisoner {
    pub trigger: crate::attacks::Trigger,
    pub caption: String,
    pub seed: u64,
}

impl Poisoner for TriggerPoisoner {
    fn poison(&self, pair: Pair, index: usize) -> Result<Pair> {
        Ok(Pair {
            image: self.trigger.apply(&pair.image, self.seed, index as u64)?,
            caption: self.caption.clone(),
        })
    }
}

/// Image-caption pairs from a CSV manifest (`path,caption`), decoded and preprocessed to `size`.
pub struct ManifestPairs {
    pub items: Vec<(std::path::PathBuf, String)>,
    pub size: u32,
}

impl PairSource for ManifestPairs {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn get(&self, index: usize) -> Result<Pair> {
        let (path, caption) = &self.items[index];
        Ok(Pair {
            image: crate::image::load_unit(path, self.size, &Device::Cpu)?,
            caption: caption.clone(),
        })
    }
}
