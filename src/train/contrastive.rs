//! CLIP's symmetric InfoNCE training, used to pretrain the toy CLIP and to plant backdoors:
//! a seeded fraction of pairs gets the trigger and a caption naming the target class, or, for
//! the label-consistent attack, a seeded set of target-class pairs gets a PGD perturbation and
//! the trigger and keeps its caption.

use super::poison_captions::CaptionDraw;
use crate::attacks::WaNet;
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

/// CleanCLIP's loss (Bansal et al., ICCV 2023): the multimodal InfoNCE (`clip_loss`) plus
/// `inmodal_weight` times the unimodal one, the mean of the image-to-augmented-image and the
/// text-to-augmented-text cross-entropies (one direction each, as CleanCLIP's `get_loss`), all at
/// the model's logit scale.
pub fn cleanclip_loss(
    image_embeds: &Tensor,
    augmented_image_embeds: &Tensor,
    text_embeds: &Tensor,
    augmented_text_embeds: &Tensor,
    log_scale: &Tensor,
    inmodal_weight: f64,
) -> Result<Tensor> {
    let crossmodal = clip_loss(image_embeds, text_embeds, log_scale)?;
    let n = image_embeds.dim(0)?;
    let labels = Tensor::arange(0u32, n as u32, image_embeds.device())?;
    let scale = log_scale.exp()?;
    let one_way = |a: &Tensor, b: &Tensor| -> Result<Tensor> {
        let logits = l2_normalize(a)?
            .matmul(&l2_normalize(b)?.t()?)?
            .broadcast_mul(&scale)?;
        Ok(candle_nn::loss::cross_entropy(&logits, &labels)?)
    };
    let inmodal = ((one_way(image_embeds, augmented_image_embeds)?
        + one_way(text_embeds, augmented_text_embeds)?)?
        / 2.0)?;
    Ok((crossmodal + (inmodal * inmodal_weight)?)?)
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
    /// The caption alone (sources that decode images override this to skip the image).
    fn caption(&self, index: usize) -> Result<String> {
        Ok(self.get(index)?.caption)
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Turns a clean pair into a poisoned one (trigger on the image, target caption).
pub trait Poisoner: Sync {
    fn poison(&self, pair: Pair, index: usize) -> Result<Pair>;

    /// Which of `n` pairs [`train`] poisons, given the config's rate and seed: by default a
    /// seeded share of all pairs ([`poisoned_indices`]).
    fn chosen(&self, n: usize, rate: f64, seed: u64) -> Result<Vec<bool>> {
        Ok(poisoned_indices(n, rate, seed))
    }
}

/// What to train and how.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContrastiveConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// Share of training pairs poisoned (0 = clean training).
    pub poison_rate: f64,
    /// Peak learning rate: a linear warm-up over `warmup` steps, then a cosine decay to 0 over
    /// the training's own steps ([`ContrastiveConfig::steps`]).
    pub lr: f64,
    pub warmup: usize,
}

impl ContrastiveConfig {
    /// The batch actually used on `n` pairs: InfoNCE needs two pairs, and a batch cannot
    /// exceed the pairs.
    pub fn batch(&self, n: usize) -> usize {
        self.batch_size.clamp(2, n.max(2))
    }

    /// Optimizer steps on `n` pairs: whole batches per epoch (the ragged tail is dropped, as
    /// CLIP training does), times the epochs.
    pub fn steps(&self, n: usize) -> usize {
        if n < 2 {
            return 0;
        }
        (n / self.batch(n)) * self.epochs
    }

    /// The learning rate of every step, over exactly [`Self::steps`] steps.
    pub fn schedule(&self, n: usize) -> Result<CosineSchedule> {
        let total = self.steps(n);
        if total == 0 {
            return Err(Error::Invalid(
                "no training steps: raise epochs or lower the batch size".into(),
            ));
        }
        CosineSchedule::new(self.lr, 0.0, total, self.warmup.min(total - 1))
    }
}

/// Indices of the poisoned pairs: a seeded subset of round(rate * n).
pub fn poisoned_indices(n: usize, rate: f64, seed: u64) -> Vec<bool> {
    label_consistent_indices(&vec![true; n], rate, seed)
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

/// Trains `vars` on `source` with symmetric InfoNCE, the learning rate following the config's
/// schedule over this training's own steps. Returns the per-step log. `on_step` sees each
/// record (progress bars, early checks).
pub fn train(
    vars: &ClipVars,
    tokenizer: &ClipTokenizer,
    source: &dyn PairSource,
    poisoner: Option<&dyn Poisoner>,
    cfg: &ContrastiveConfig,
    optimizer: &mut dyn Optimizer,
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
    let poisoned = match poisoner {
        Some(p) => p.chosen(n, cfg.poison_rate, cfg.seed)?,
        None => vec![false; n],
    };
    if poisoned.len() != n {
        return Err(Error::Invalid(format!(
            "the poisoner chose among {} pairs, the source has {n}",
            poisoned.len()
        )));
    }
    let batch = cfg.batch(n);
    let schedule = cfg.schedule(n)?;
    let total = schedule.total();
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
            let pixels = crate::image::normalize_with(
                &Tensor::stack(&images, 0)?.to_device(&device)?,
                &model.config().preprocess,
            )?;
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

/// The attack's poisoning: trigger on the image, caption replaced by one naming the target
/// (drawn per pair, see `poison_captions`).
pub struct TriggerPoisoner {
    pub trigger: crate::attacks::Trigger,
    pub caption: CaptionDraw,
    pub seed: u64,
    /// The pairs the poisoned ones are drawn from (a source-specific backdoor); `None`: all.
    pub candidates: Option<Vec<bool>>,
}

impl Poisoner for TriggerPoisoner {
    fn poison(&self, pair: Pair, index: usize) -> Result<Pair> {
        Ok(Pair {
            image: self.trigger.apply(&pair.image, self.seed, index as u64)?,
            caption: self.caption.caption(&pair.caption, index),
        })
    }

    fn chosen(&self, n: usize, rate: f64, seed: u64) -> Result<Vec<bool>> {
        match &self.candidates {
            None => Ok(poisoned_indices(n, rate, seed)),
            Some(c) if c.len() == n => Ok(label_consistent_indices(c, rate, seed)),
            Some(c) => Err(Error::Invalid(format!(
                "poisoner: candidates drawn for {} pairs, training has {n}",
                c.len()
            ))),
        }
    }
}

/// WaNet's noise mode (Nguyen & Tran 2021; BackdoorBench's `cross_ratio`, 2 in both): besides
/// the pairs poisoned with the warp and the target caption, `cross_ratio` times as many other
/// pairs get the warp plus per-pixel noise ([`WaNet::apply_with_noise`]) and keep their
/// caption, so the model learns this warp rather than "warped means the target".
pub struct WanetNoiseModePoisoner {
    pub wanet: WaNet,
    pub caption: CaptionDraw,
    /// The trigger seed (the warp field and the per-pair noise).
    pub seed: u64,
    poisoned: Vec<bool>,
    cross: Vec<bool>,
    /// The training config's (pairs, rate, selection seed) the masks were drawn for.
    drawn_for: (usize, f64, u64),
}

impl WanetNoiseModePoisoner {
    /// Draws the masks for `n` pairs: the poisoned ones as [`poisoned_indices`] (so a run with
    /// and without noise mode poisons the same pairs), then round(`cross_ratio` x poisoned)
    /// noise-mode pairs among the others, capped at what is left.
    pub fn new(
        wanet: WaNet,
        caption: CaptionDraw,
        trigger_seed: u64,
        n: usize,
        rate: f64,
        selection_seed: u64,
        cross_ratio: f64,
    ) -> Result<Self> {
        if !(cross_ratio.is_finite() && cross_ratio >= 0.0) {
            return Err(Error::Invalid(format!(
                "WaNet noise mode: cross ratio {cross_ratio} must be a finite number ≥ 0"
            )));
        }
        let poisoned = poisoned_indices(n, rate, selection_seed);
        let count = poisoned.iter().filter(|&&p| p).count();
        let others: Vec<bool> = poisoned.iter().map(|&p| !p).collect();
        let share = if n == 0 {
            0.0
        } else {
            cross_ratio * count as f64 / n as f64
        };
        let cross = label_consistent_indices(&others, share, selection_seed ^ 0xc055);
        Ok(Self {
            wanet,
            caption,
            seed: trigger_seed,
            poisoned,
            cross,
            drawn_for: (n, rate, selection_seed),
        })
    }

    /// How many pairs get the noisy warp and keep their caption.
    pub fn cross_count(&self) -> usize {
        self.cross.iter().filter(|&&c| c).count()
    }
}

impl Poisoner for WanetNoiseModePoisoner {
    fn poison(&self, pair: Pair, index: usize) -> Result<Pair> {
        if self.poisoned.get(index) == Some(&true) {
            Ok(Pair {
                image: self.wanet.apply(&pair.image, self.seed)?,
                caption: self.caption.caption(&pair.caption, index),
            })
        } else if self.cross.get(index) == Some(&true) {
            let image = self
                .wanet
                .apply_with_noise(&pair.image, self.seed, index as u64)?;
            Ok(Pair { image, ..pair })
        } else {
            Ok(pair)
        }
    }

    /// Both kinds of pair pass through [`Poisoner::poison`]; the masks must be the ones drawn
    /// for this training run.
    fn chosen(&self, n: usize, rate: f64, seed: u64) -> Result<Vec<bool>> {
        if (n, rate, seed) != self.drawn_for {
            return Err(Error::Invalid(format!(
                "WaNet noise mode: masks drawn for {:?} (pairs, rate, seed), training asks {:?}",
                self.drawn_for,
                (n, rate, seed)
            )));
        }
        Ok(self
            .poisoned
            .iter()
            .zip(&self.cross)
            .map(|(&p, &c)| p || c)
            .collect())
    }
}

/// Whether `caption` names `class` as a word (or, for a multi-word class, as consecutive words):
/// case-insensitive, words being runs of letters and digits, so "Hearts" or "sweetheart" do not
/// name "heart". How `rvpt attack` tells target-class pairs when it has captions but no labels.
pub fn caption_names(caption: &str, class: &str) -> bool {
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let (caption, class) = (words(caption), words(class));
    !class.is_empty() && caption.windows(class.len()).any(|w| w == class.as_slice())
}

/// Which of `source`'s pairs have a caption naming `class` ([`caption_names`]).
pub fn pairs_naming(source: &dyn PairSource, class: &str) -> Result<Vec<bool>> {
    (0..source.len())
        .map(|i| Ok(caption_names(&source.caption(i)?, class)))
        .collect()
}

/// The label-consistent choice: round(rate * n) pairs, n = all pairs, capped at the number of
/// target-class pairs (`is_target`), as a seeded subset of those. With every pair a candidate
/// this is [`poisoned_indices`]; a source-specific backdoor draws from its source's pairs.
pub fn label_consistent_indices(is_target: &[bool], rate: f64, seed: u64) -> Vec<bool> {
    let n = is_target.len();
    let mut targets: Vec<usize> = (0..n).filter(|&i| is_target[i]).collect();
    let k = ((rate * n as f64).round() as usize).min(targets.len());
    targets.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ 0x5eed_0001,
    ));
    let mut mask = vec![false; n];
    for &i in &targets[..k] {
        mask[i] = true;
    }
    mask
}

/// What the label-consistent attack poisons and how.
#[derive(Debug, Clone)]
pub struct LabelConsistentConfig {
    /// Target class: pairs whose caption names it ([`caption_names`]) are the candidates.
    pub target: String,
    pub trigger: crate::attacks::LabelConsistent,
    pub pgd: crate::attacks::optimise::PgdConfig,
    /// Share of all pairs poisoned, and the selection seed: must equal the training config's.
    pub poison_rate: f64,
    pub seed: u64,
}

/// Label-consistent poisoning (Turner et al.): target-class pairs keep their caption; their
/// image is made hard to recognise by PGD, then gets the corner trigger. The attacker perturbs
/// the data offline, so the PGD images are computed once, when the poisoner is built, with the
/// frozen model that is about to be fine-tuned, and kept in memory (on the CPU).
pub struct LabelConsistentPoisoner {
    pub config: LabelConsistentConfig,
    /// Pairs whose caption names the target class.
    pub target_pairs: usize,
    mask: Vec<bool>,
    perturbed: std::collections::HashMap<usize, Tensor>,
}

impl LabelConsistentPoisoner {
    /// Chooses the poisoned pairs among `source`'s target-class pairs and runs PGD on them.
    ///
    /// PGD lowers the cosine between each image and "a photo of a {target}." (a targeted-away
    /// variant of Turner et al.'s untargeted PGD on the true label): every chosen image *is* of
    /// the target class, so that is its label, and no class list is needed. Pushing an image
    /// away from its own caption among the batch was the alternative; with all captions naming
    /// the target, that contrasts attributes (colour, position) rather than erasing the class.
    pub fn build(
        model: &crate::model::Clip,
        tokenizer: &ClipTokenizer,
        source: &dyn PairSource,
        config: LabelConsistentConfig,
    ) -> Result<Self> {
        if !(0.0..=1.0).contains(&config.poison_rate) {
            return Err(Error::Invalid(format!(
                "label-consistent poisoning: poison rate {} is not in [0, 1]",
                config.poison_rate
            )));
        }
        let is_target = pairs_naming(source, &config.target)?;
        let target_pairs = is_target.iter().filter(|&&t| t).count();
        if target_pairs == 0 && config.poison_rate > 0.0 {
            return Err(Error::Invalid(format!(
                "label-consistent poisoning: no caption names the target class `{}`",
                config.target
            )));
        }
        let mask = label_consistent_indices(&is_target, config.poison_rate, config.seed);
        let device = model.logit_scale()?.device().clone();
        let text = crate::text::class_text_embeddings(
            model,
            tokenizer,
            std::slice::from_ref(&config.target),
            &device,
        )?
        .get(0)?;
        let chosen: Vec<usize> = (0..mask.len()).filter(|&i| mask[i]).collect();
        let mut perturbed = std::collections::HashMap::with_capacity(chosen.len());
        for chunk in chosen.chunks(64) {
            let images = chunk
                .iter()
                .map(|&i| Ok(source.get(i)?.image))
                .collect::<Result<Vec<Tensor>>>()?;
            let batch = Tensor::stack(&images, 0)?.to_device(&device)?;
            let out =
                crate::attacks::optimise::pgd_away_from_text(model, &text, &batch, &config.pgd)?
                    .to_device(&Device::Cpu)?;
            for (b, &i) in chunk.iter().enumerate() {
                perturbed.insert(i, out.get(b)?);
            }
        }
        Ok(Self {
            config,
            target_pairs,
            mask,
            perturbed,
        })
    }

    /// Pairs poisoned.
    pub fn count(&self) -> usize {
        self.perturbed.len()
    }

    /// The poisoned-pair mask (true = poisoned).
    pub fn mask(&self) -> &[bool] {
        &self.mask
    }
}

impl Poisoner for LabelConsistentPoisoner {
    /// The PGD image of pair `index` with the corner trigger; the caption is kept.
    fn poison(&self, pair: Pair, index: usize) -> Result<Pair> {
        let image = self.perturbed.get(&index).ok_or_else(|| {
            Error::Invalid(format!(
                "label-consistent poisoning: pair {index} was not chosen when the poisoner was built"
            ))
        })?;
        if image.dims() != pair.image.dims() {
            return Err(Error::Invalid(format!(
                "label-consistent poisoning: pair {index} is {:?}, its PGD image {:?}",
                pair.image.dims(),
                image.dims()
            )));
        }
        Ok(Pair {
            image: self.config.trigger.apply(image)?,
            caption: pair.caption,
        })
    }

    /// The pairs chosen at build time; refuses a training config with another rate or seed.
    fn chosen(&self, n: usize, rate: f64, seed: u64) -> Result<Vec<bool>> {
        let c = &self.config;
        if n != self.mask.len() || rate != c.poison_rate || seed != c.seed {
            return Err(Error::Invalid(format!(
                "label-consistent poisoner was built for {} pairs, rate {}, seed {}; training has {n} pairs, rate {rate}, seed {seed}",
                self.mask.len(),
                c.poison_rate,
                c.seed
            )));
        }
        Ok(self.mask.clone())
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
        let (path, caption) = self.item(index)?;
        Ok(Pair {
            image: crate::image::load_unit(path, self.size, &Device::Cpu)?,
            caption: caption.clone(),
        })
    }

    fn caption(&self, index: usize) -> Result<String> {
        Ok(self.item(index)?.1.clone())
    }
}

impl ManifestPairs {
    fn item(&self, index: usize) -> Result<&(std::path::PathBuf, String)> {
        self.items.get(index).ok_or_else(|| {
            Error::Invalid(format!(
                "pair {index} is out of range: the manifest has {} pairs",
                self.items.len()
            ))
        })
    }
}
