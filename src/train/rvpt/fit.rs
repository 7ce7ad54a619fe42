//! The RVPT training loop: seeded k-shot data, CoOp augmentation or the frozen-prefix cache,
//! SGD with momentum and weight decay on the prompts only, cosine annealing per epoch.

use super::encoder::PromptedEncoder;
use super::loss::{rvpt_loss, LossConfig};
use super::prompts::{DeepPrompts, PromptPlacement};
use crate::data::{shuffled, Loader, Transform};
use crate::error::{Error, Result};
use crate::model::Clip;
use crate::optim::{CosineSchedule, Optimizer, Sgd, SgdConfig};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use std::path::PathBuf;
use std::time::Instant;

/// How the k shots per class are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShotSampler {
    /// rvpt's own (ChaCha8, per class; `data::k_shot`): a class with too few images is an error.
    #[default]
    Rvpt,
    /// CoOp's (Python `random` seeded like CoOp; `data::k_shot_coop`): the same shots as CoOp
    /// for the same seed and data order (a CoOp split file); a class with too few gives all.
    Coop,
}

impl std::str::FromStr for ShotSampler {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rvpt" => Ok(Self::Rvpt),
            "coop" => Ok(Self::Coop),
            _ => Err(Error::setting(
                crate::Setting::Sampler,
                format!("`{s}`"),
                "expected rvpt or coop",
            )),
        }
    }
}

/// Training settings; the defaults are the paper's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RvptConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub shots: usize,
    #[serde(default)]
    pub sampler: ShotSampler,
    pub seed: u64,
    /// CoOp augmentation (random resized crop + flip); without it the prefix cache is used.
    pub augment: bool,
    /// The smallest area share of the augmentation's random crops (CoOp: 0.08). Small images
    /// lose their object in small crops: 0.08 of a 32 px image is a 9 px square.
    #[serde(default = "coop_crop_scale")]
    pub crop_scale: f64,
    /// Prompted blocks: the last N (default 6) or a range counted from the input.
    pub blocks: PromptPlacement,
    /// Prompt tokens per block.
    pub length: usize,
    pub loss: LossConfig,
}

fn coop_crop_scale() -> f64 {
    crate::image::COOP_CROP_SCALE
}

impl Default for RvptConfig {
    fn default() -> Self {
        Self {
            epochs: 50,
            batch_size: 32,
            lr: 0.002,
            momentum: 0.9,
            weight_decay: 5e-4,
            shots: 16,
            sampler: ShotSampler::Rvpt,
            seed: 0,
            augment: true,
            crop_scale: crate::image::COOP_CROP_SCALE,
            blocks: PromptPlacement::Last(6),
            length: 50,
            loss: LossConfig::default(),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    pub ce: f64,
    pub fr: f64,
    pub lr: f64,
    pub seconds: f64,
}

/// Where training resumes from: prompts, momentum buffers and the epochs already done.
pub struct FitState {
    pub prompts: DeepPrompts,
    pub momentum: Vec<Option<Tensor>>,
    pub logs: Vec<EpochLog>,
}

impl FitState {
    /// Training from the start: no momentum yet (one empty slot per prompt tensor), no epochs.
    pub fn new(prompts: DeepPrompts) -> Self {
        Self {
            momentum: vec![None; prompts.depth()],
            prompts,
            logs: vec![],
        }
    }
}

/// Per-image work that does not depend on the prompts: the shared prefix and the frozen branch's
/// target (pooled feature, or [CLS] per repelled block when FR is on blocks).
pub struct Frozen {
    pub prefix: Tensor,
    pub target: Tensor,
}

/// The blocks FR repels at (`None`: the pooled feature), checked against the prompts.
pub fn repelled_blocks(enc: &PromptedEncoder, loss: &LossConfig) -> Result<Option<Vec<usize>>> {
    loss.repel
        .resolve(enc.prompts.blocks(), enc.vision.encoder.layers.len())
}

/// The prompt-independent part of a batch of normalised pixels.
pub fn frozen_part(enc: &PromptedEncoder, pixels: &Tensor, loss: &LossConfig) -> Result<Frozen> {
    let prefix = enc.prefix(pixels)?.detach();
    let target = match repelled_blocks(enc, loss)? {
        Some(repel) => {
            let mut x = prefix.clone();
            let mut cls = Vec::new();
            let top = enc.vision.encoder.layers.len();
            // Up to the highest repelled block (the list is sorted): nothing above it is read.
            let last = repel.last().map_or(top, |&b| b + 1);
            for i in enc.prompts.first_block..last {
                // The last block's [CLS] is all that is read.
                x = if i + 1 == top {
                    enc.vision.encoder.layers[i].forward_head(&x, None, 1)?
                } else {
                    enc.vision.encoder.layers[i].forward(&x, None)?
                };
                if repel.contains(&i) {
                    cls.push(x.narrow(1, 0, 1)?);
                }
            }
            Tensor::cat(&cls, 1)?.detach() // (B, repelled blocks, W)
        }
        None => enc.frozen_feature(&prefix)?,
    };
    Ok(Frozen { prefix, target })
}

/// The RVPT loss of a batch (what every training step differentiates).
pub fn batch_loss(
    model: &Clip,
    enc: &PromptedEncoder,
    text: &Tensor,
    frozen: &Frozen,
    labels: &[usize],
    loss: &LossConfig,
) -> Result<super::loss::LossParts> {
    let device = frozen.prefix.device();
    let labels = Tensor::from_vec(
        labels.iter().map(|&l| l as u32).collect::<Vec<_>>(),
        labels.len(),
        device,
    )?;
    let outs = enc.prompted_blocks(&frozen.prefix)?;
    let last = outs
        .last()
        .ok_or_else(|| Error::Invalid("no prompted blocks".into()))?;
    let pooled = enc.vision.pool(last)?;
    let (prompted, target) = if let Some(repel) = repelled_blocks(enc, loss)? {
        let first = enc.prompts.first_block;
        let cls: Vec<Tensor> = repel
            .iter()
            .map(|&i| outs[i - first].narrow(1, 0, 1))
            .collect::<candle_core::Result<_>>()?;
        let p = Tensor::cat(&cls, 1)?;
        let (b, d, w) = p.dims3()?;
        (p.reshape((b * d, w))?, frozen.target.reshape((b * d, w))?)
    } else {
        (pooled.clone(), frozen.target.clone())
    };
    rvpt_loss(model, text, &labels, &pooled, &prompted, &target, loss)
}

/// One optimisation step on a batch; returns (loss, CE, FR) as a (3,) tensor left on the device,
/// so that a step queues its work without waiting for it (the epoch reads the sums once).
fn step(
    model: &Clip,
    enc: &PromptedEncoder,
    text: &Tensor,
    frozen: &Frozen,
    labels: &[usize],
    cfg: &RvptConfig,
    opt: &mut Sgd,
) -> Result<Tensor> {
    let parts = batch_loss(model, enc, text, frozen, labels, &cfg.loss)?;
    opt.backward_step(&parts.total)?;
    parts.stacked()
}

/// A batch of the frozen part from the cache, on the training `device`.
fn gather(cache: &Frozen, idx: &[usize], device: &Device) -> Result<Frozen> {
    let ids = Tensor::from_vec(
        idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
        idx.len(),
        cache.prefix.device(),
    )?;
    Ok(Frozen {
        prefix: cache.prefix.index_select(&ids, 0)?.to_device(device)?,
        target: cache.target.index_select(&ids, 0)?.to_device(device)?,
    })
}

/// Where a prefix cache of `bytes` for `images` images lives: on the training `device` when it
/// takes at most half of its free memory ([`crate::device::cache_fits`]), else in host memory,
/// each batch then copied over. Says which in the log.
fn cache_home(
    device: &Device,
    bytes: u64,
    images: usize,
    progress: crate::progress::Progress,
) -> Device {
    let free = crate::device::free_memory(device);
    let fits = crate::device::cache_fits(bytes, free);
    let name = crate::device::device_name(device);
    let (mb, free_mb) = (bytes as f64 / 1e6, free.unwrap_or(0) as f64 / 1e6);
    if !fits && progress.is_shown() {
        // A warning, shown even where progress bars are (a terminal).
        if device.is_cpu() {
            eprintln!("prefix cache: {mb:.0} MB is more than half of the {free_mb:.0} MB of host memory available");
        } else {
            eprintln!("prefix cache: {mb:.0} MB does not fit in half of the {free_mb:.0} MB free on {name}; kept in host memory, each batch copied to {name}");
        }
    }
    if !fits && !device.is_cpu() {
        return Device::Cpu;
    }
    progress.line(|| format!("prefix cache: {images} images, {mb:.0} MB on {name}"));
    device.clone()
}

/// The frozen part of every training image, computed once (`--augment none`) in the model's
/// dtype, where [`cache_home`] puts it.
fn build_cache(
    enc: &PromptedEncoder,
    samples: &[(PathBuf, usize)],
    cfg: &RvptConfig,
    pixels: &dyn Fn(&Tensor) -> Result<Tensor>,
    device: &Device,
    progress: crate::progress::Progress,
) -> Result<Frozen> {
    let size = enc.vision.config().image_size as u32;
    let loader = Loader::new(
        samples.to_vec(),
        Transform::eval(size),
        cfg.batch_size,
        &Device::Cpu,
    )?;
    let bar = progress.counter(samples.len(), "caching", "images");
    let mut home: Option<Device> = None;
    let (mut prefixes, mut targets) = (Vec::new(), Vec::new());
    for batch in loader.all()? {
        let batch = batch?;
        let f = frozen_part(enc, &pixels(&batch.images)?, &cfg.loss)?;
        let home = match &home {
            Some(home) => home,
            None => {
                // The first batch tells the size per image; the whole cache follows.
                let bytes_of = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as u64;
                let per_image =
                    (bytes_of(&f.prefix) + bytes_of(&f.target)) / batch.labels.len() as u64;
                let bytes = per_image * samples.len() as u64;
                home.insert(cache_home(device, bytes, samples.len(), progress))
            }
        };
        prefixes.push(f.prefix.to_device(home)?);
        targets.push(f.target.to_device(home)?);
        bar.inc(batch.labels.len() as u64);
    }
    bar.finish_and_clear();
    Ok(Frozen {
        prefix: Tensor::cat(&prefixes, 0)?,
        target: Tensor::cat(&targets, 0)?,
    })
}

/// Refuses settings `fit` cannot train with, before any work.
fn check_settings(samples: &[(PathBuf, usize)], cfg: &RvptConfig, use_cache: bool) -> Result<()> {
    if samples.is_empty() {
        return Err(Error::Invalid("no training images".into()));
    }
    if use_cache && cfg.augment {
        return Err(Error::Invalid(
            "the prefix cache needs training without augmentation".into(),
        ));
    }
    if cfg.augment && !crate::image::is_crop_scale(cfg.crop_scale) {
        return Err(Error::Invalid(format!(
            "crop scale {}: the smallest crop's share of the image must be in (0, 1]",
            cfg.crop_scale
        )));
    }
    Ok(())
}

/// SGD over the prompts of `state`, with its momentum buffers (where a resumed state has them).
fn resumed_sgd(state: &FitState, cfg: &RvptConfig) -> Result<Sgd> {
    let mut opt = Sgd::new(
        state.prompts.vars.clone(),
        SgdConfig {
            lr: cfg.lr,
            momentum: cfg.momentum,
            dampening: 0.0,
            weight_decay: cfg.weight_decay,
            nesterov: false,
        },
    )?;
    for (v, m) in state.prompts.vars.iter().zip(&state.momentum) {
        if let Some(m) = m {
            opt.set_momentum_buffer(v, m.clone())?;
        }
    }
    Ok(opt)
}

/// The images of `epoch` without the cache: CoOp augmentation seeded by (seed, epoch, image),
/// reproducible whatever the thread order, or the eval transform.
fn epoch_transform(cfg: &RvptConfig, size: u32, epoch: usize) -> Transform {
    if !cfg.augment {
        return Transform::eval(size);
    }
    let (seed, e, crop_scale) = (cfg.seed, epoch as u64, cfg.crop_scale);
    Transform::custom(size, move |img, item| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xa06_0000);
        rng.set_stream((e << 32) ^ item.index as u64);
        Ok(crate::image::augment_coop(&img, size, crop_scale, &mut rng))
    })
}

/// Σ batch size × (loss, CE, FR) over an epoch, kept on the device until the epoch ends.
struct EpochSums {
    sums: Tensor,
    n: usize,
}

impl EpochSums {
    fn new(device: &Device) -> Result<Self> {
        Ok(Self {
            sums: Tensor::zeros(3, candle_core::DType::F32, device)?,
            n: 0,
        })
    }

    /// Adds a step's (3,) parts for a batch of `b` images.
    fn add(&mut self, parts: Tensor, b: usize) -> Result<()> {
        self.sums = (&self.sums + parts.affine(b as f64, 0.0)?)?;
        self.n += b;
        Ok(())
    }

    /// The epoch's means (the one read from the device) and its time since `t0`.
    fn log(self, epoch: usize, lr: f64, t0: Instant) -> Result<EpochLog> {
        let n = self.n.max(1) as f64;
        let sums = self.sums.to_vec1::<f32>()?;
        let [sum, sum_ce, sum_fr] = [0, 1, 2].map(|i| sums[i] as f64);
        Ok(EpochLog {
            epoch,
            loss: sum / n,
            ce: sum_ce / n,
            fr: sum_fr / n,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }
}

/// Trains the prompts of `state` on `samples` (already the k-shot subset) for the remaining
/// epochs. `text`: (classes, E) unit class embeddings. `use_cache` (only without augmentation)
/// computes the frozen part once; `on_epoch` sees the state after every epoch (checkpoints).
#[allow(clippy::too_many_arguments)]
pub fn fit(
    model: &Clip,
    text: &Tensor,
    samples: &[(PathBuf, usize)],
    cfg: &RvptConfig,
    mut state: FitState,
    use_cache: bool,
    progress: crate::progress::Progress,
    on_epoch: &mut dyn FnMut(&FitState) -> Result<()>,
) -> Result<FitState> {
    check_settings(samples, cfg, use_cache)?;
    let device = text.device().clone();
    let dtype = model.logit_scale()?.dtype();
    let size = model.config().vision_config.image_size as u32;
    let enc = PromptedEncoder::new(&model.vision, &state.prompts)?;
    // Refuse a bad --repel-blocks before any work.
    repelled_blocks(&enc, &cfg.loss)?;
    let mut opt = resumed_sgd(&state, cfg)?;
    let schedule = CosineSchedule::new(cfg.lr, 0.0, cfg.epochs, 0)?;
    let to_pixels = |unit: &Tensor| -> Result<Tensor> {
        let pixels =
            crate::image::normalize_with(&unit.to_device(&device)?, &model.config().preprocess)?;
        Ok(pixels.to_dtype(dtype)?)
    };
    let cache = use_cache
        .then(|| build_cache(&enc, samples, cfg, &to_pixels, &device, progress))
        .transpose()?;
    let all: Vec<usize> = (0..samples.len()).collect();
    let start = state.logs.len();
    let bar = progress.counter(cfg.epochs, "training", "epochs");
    bar.set_position(start as u64);
    for epoch in start..cfg.epochs {
        let t0 = Instant::now();
        let lr = schedule.apply(&mut opt, epoch);
        let order = shuffled(&all, cfg.seed, epoch as u64);
        let mut sums = EpochSums::new(&device)?;
        if let Some(cache) = &cache {
            for idx in order.chunks(cfg.batch_size) {
                let labels: Vec<usize> = idx.iter().map(|&i| samples[i].1).collect();
                let frozen = gather(cache, idx, &device)?;
                let parts = step(model, &enc, text, &frozen, &labels, cfg, &mut opt)?;
                sums.add(parts, idx.len())?;
            }
        } else {
            let transform = epoch_transform(cfg, size, epoch);
            let loader = Loader::new(samples.to_vec(), transform, cfg.batch_size, &Device::Cpu)?;
            for batch in loader.batches(order)? {
                let batch = batch?;
                let frozen = frozen_part(&enc, &to_pixels(&batch.images)?, &cfg.loss)?;
                let parts = step(model, &enc, text, &frozen, &batch.labels, cfg, &mut opt)?;
                sums.add(parts, batch.labels.len())?;
            }
        }
        let log = sums.log(epoch, lr, t0)?;
        state.momentum = state
            .prompts
            .vars
            .iter()
            .map(|v| opt.momentum_buffer(v).cloned())
            .collect();
        bar.inc(1);
        bar.set_message(format!("loss {:.3}", log.loss));
        progress.line(|| {
            format!(
                "training: epoch {}/{}, loss {:.4} (CE {:.4}, FR {:.4}), lr {lr:.2e}, {:.1} s",
                epoch + 1,
                cfg.epochs,
                log.loss,
                log.ce,
                log.fr,
                t0.elapsed().as_secs_f64()
            )
        });
        state.logs.push(log);
        on_epoch(&state)?;
    }
    bar.finish_and_clear();
    Ok(state)
}
