//! CleanCLIP (Bansal et al., ICCV 2023): fine-tune the whole CLIP on clean image–caption pairs
//! with the multimodal InfoNCE plus the unimodal image–image and text–text InfoNCE between each
//! pair and an augmented view of it (`contrastive::cleanclip_loss`), AdamW, cosine decay.
//!
//! The views follow CleanCLIP's in kind with what this crate has: an image gets one operation
//! drawn from flip, brightness, hue, blur and noise (CleanCLIP: torchvision's AutoAugment, whose
//! geometric operations would wreck 32 px toy images); a caption gets EDA's random swap or
//! random deletion (CleanCLIP: EDA, whose synonym and insertion operations need WordNet and could
//! leave a toy tokenizer's closed vocabulary).

use super::DefenceContext;
use crate::attacks::Perturbation;
use crate::data::{shuffled, CaptionManifest};
use crate::error::{Error, Result};
use crate::model::init::ClipVars;
use crate::model::Clip;
use crate::optim::{split_decay, AdamW, AdamWConfig, CosineSchedule, Optimizer};
use crate::train::contrastive::{cleanclip_loss, MAX_LOG_SCALE};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CleanClipConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Weight of the unimodal term (CleanCLIP's λ2; the multimodal weight λ1 is 1).
    pub inmodal_weight: f64,
    pub seed: u64,
    /// A CSV of clean `path,caption` pairs to fine-tune on; without it, the k shots with their
    /// captions (a `captions.csv` in the training folder) or "a photo of a {class}.".
    pub pairs: Option<PathBuf>,
}

impl Default for CleanClipConfig {
    /// The paper's settings for real CLIP (lr 5e-6; 3e-6 for WaNet), batch 64, 10 epochs.
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 64,
            lr: 5e-6,
            weight_decay: 0.1,
            inmodal_weight: 1.0,
            seed: 0,
            pairs: None,
        }
    }
}

/// The image operations a view draws from.
const VIEW_OPS: [&str; 5] = ["flip", "brightness:0.4", "hue:0.1", "blur:3", "noise:0.05"];
/// EDA's share of words changed.
const EDA_ALPHA: f64 = 0.1;

/// An augmented view of `image` (3, S, S) in [0, 1]: one of `ops` drawn by `rng`.
fn image_view(image: &Tensor, ops: &[Perturbation], rng: &mut ChaCha8Rng) -> Result<Tensor> {
    ops[rng.random_range(0..ops.len())].apply(image, rng.random(), 0)
}

/// EDA's random swap or random deletion (Wei & Zou 2019) on a caption's words.
pub fn caption_view(caption: &str, rng: &mut impl Rng) -> String {
    let mut words: Vec<&str> = caption.split_whitespace().collect();
    if words.len() < 2 {
        return caption.to_string();
    }
    let n = ((EDA_ALPHA * words.len() as f64) as usize).max(1);
    if rng.random_bool(0.5) {
        for _ in 0..n {
            let (a, b) = (
                rng.random_range(0..words.len()),
                rng.random_range(0..words.len()),
            );
            words.swap(a, b);
        }
        words.join(" ")
    } else {
        let kept: Vec<&str> = words
            .iter()
            .copied()
            .filter(|_| !rng.random_bool(EDA_ALPHA))
            .collect();
        if kept.is_empty() {
            words[rng.random_range(0..words.len())].to_string()
        } else {
            kept.join(" ")
        }
    }
}

/// `class/file`: how a shot is found in its folder's captions.csv, whatever the folder's path
/// spelling (relative, absolute, `./`).
fn folder_key(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let class = path.parent()?.file_name()?.to_str()?;
    Some(format!("{class}/{file}"))
}

/// The clean pairs to fine-tune on: `cfg.pairs`, or the shots, captioned by the `captions.csv`
/// of their folder when it has one (the toy splits do), else "a photo of a {class}.".
pub fn clean_pairs(
    samples: &[(PathBuf, usize)],
    classes: &[String],
    cfg: &CleanClipConfig,
) -> Result<Vec<(PathBuf, String)>> {
    if let Some(csv) = &cfg.pairs {
        return Ok(CaptionManifest::open(csv)?.items().to_vec());
    }
    let captions: HashMap<String, String> = match samples
        .first()
        .and_then(|s| s.0.parent()?.parent().map(|d| d.join("captions.csv")))
        .filter(|p| p.is_file())
    {
        Some(csv) => CaptionManifest::open(&csv)?
            .items()
            .iter()
            .filter_map(|(p, c)| Some((folder_key(p)?, c.clone())))
            .collect(),
        None => HashMap::new(),
    };
    Ok(samples
        .iter()
        .map(|(path, class)| {
            let caption = folder_key(path)
                .and_then(|k| captions.get(&k).cloned())
                .unwrap_or_else(|| crate::text::class_prompt(&classes[*class]));
            (path.clone(), caption)
        })
        .collect())
}

/// Fine-tunes a copy of the backdoored model; returns it in the context's dtype, and writes it
/// (f32, with config and tokenizer) to `out_dir` so it can be evaluated again.
pub fn fine_tune(ctx: &DefenceContext, cfg: &CleanClipConfig, out_dir: &Path) -> Result<Clip> {
    let pairs = clean_pairs(ctx.samples, ctx.classes, cfg)?;
    if pairs.len() < 2 {
        return Err(Error::Invalid(format!(
            "CleanCLIP: {} clean pairs, need at least 2",
            pairs.len()
        )));
    }
    if cfg.epochs == 0 || cfg.batch_size < 2 {
        return Err(Error::Invalid(
            "CleanCLIP: need at least 1 epoch and a batch of at least 2".into(),
        ));
    }
    let ckpt = crate::engine::read_checkpoint(ctx.weights)?;
    let vars = ClipVars::from_tensors(&ckpt.tensors, &ckpt.config, &ctx.device)?;
    let model = vars.model()?;
    let log_scale = vars
        .get("logit_scale")
        .ok_or_else(|| Error::Invalid("CleanCLIP: the model has no logit_scale".into()))?
        .clone();
    let mut opt = AdamW::new(
        split_decay(vars.vars.iter().cloned(), cfg.weight_decay).to_vec(),
        AdamWConfig {
            lr: cfg.lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
    )?;
    let batch = cfg.batch_size.min(pairs.len());
    let steps_per_epoch = pairs.len().div_ceil(batch);
    let schedule = CosineSchedule::new(cfg.lr, 0.0, steps_per_epoch * cfg.epochs, 0)?;
    let images: Vec<Tensor> = pairs
        .iter()
        .map(|(p, _)| crate::image::load_unit(p, ctx.image_size, &Device::Cpu))
        .collect::<Result<_>>()?;
    let bar = ctx.progress.counter(cfg.epochs, "CleanCLIP", "epochs");
    let ops = VIEW_OPS
        .iter()
        .map(|spec| Perturbation::parse(spec))
        .collect::<Result<Vec<_>>>()?;
    let all: Vec<usize> = (0..pairs.len()).collect();
    let mut step = 0;
    for epoch in 0..cfg.epochs {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ (epoch as u64).wrapping_mul(0x9e37));
        for chunk in shuffled(&all, cfg.seed, epoch as u64).chunks(batch) {
            if chunk.len() < 2 {
                continue; // InfoNCE needs a negative
            }
            let mut unit = Vec::with_capacity(2 * chunk.len());
            let mut captions = Vec::with_capacity(2 * chunk.len());
            for &i in chunk {
                unit.push(images[i].clone());
                captions.push(pairs[i].1.clone());
            }
            for &i in chunk {
                unit.push(image_view(&images[i], &ops, &mut rng)?);
                captions.push(caption_view(&pairs[i].1, &mut rng));
            }
            let pixels = crate::image::normalize_with(
                &Tensor::stack(&unit, 0)?.to_device(&ctx.device)?,
                &model.config().preprocess,
            )?;
            let ids = ctx.tokenizer.encode_tensor(&captions, &ctx.device)?;
            let (ie, te) = (model.image_embeds(&pixels)?, model.text_embeds(&ids)?);
            let b = chunk.len();
            let loss = cleanclip_loss(
                &ie.narrow(0, 0, b)?,
                &ie.narrow(0, b, b)?,
                &te.narrow(0, 0, b)?,
                &te.narrow(0, b, b)?,
                log_scale.as_tensor(),
                cfg.inmodal_weight,
            )?;
            schedule.apply(&mut opt, step);
            opt.backward_step(&loss)?;
            log_scale.set(&log_scale.as_tensor().clamp(0f32, MAX_LOG_SCALE)?)?;
            step += 1;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    vars.save(out_dir, DType::F32)?;
    if let Some(tok) = &ctx.weights.tokenizer {
        let dest = out_dir.join("tokenizer.json");
        crate::fsio::write_atomic(&dest, &tok.bytes()?)?;
    }
    let ckpt = crate::model::Checkpoint::read(
        &out_dir.join("model.safetensors"),
        Some(ckpt.config.clone()),
    )?;
    ckpt.into_model(ctx.dtype, &ctx.device)
}
