//! Planting a backdoor: poisoned contrastive fine-tuning of a whole CLIP, from one typed plan.
//! The plan is written next to the model (`poisoning.json`, with its key) so that a model
//! always says how it was made.

use super::contrastive::{
    train, ContrastiveConfig, LabelConsistentConfig, LabelConsistentPoisoner, ManifestPairs,
    Poisoner, StepLog, TriggerPoisoner, WanetNoiseModePoisoner,
};
use super::poison_captions::{CaptionDraw, PoisonCaptions};
use crate::attacks::optimise::PgdConfig;
use crate::attacks::planted::PlantedTrigger;
use crate::attacks::Trigger;
use crate::data::CaptionManifest;
use crate::error::{Error, Result, Setting};
use crate::model::init::ClipVars;
use crate::optim::{split_decay, AdamW, AdamWConfig};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Everything a poisoning run is asked to do.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PoisonPlan {
    /// The clean model to poison (entry, repo id, directory or file).
    pub weights: String,
    pub device: String,
    /// Poisoning trains in f32 (the only dtype accepted).
    pub dtype: String,
    /// CSV of clean `path,caption` pairs.
    pub pairs: PathBuf,
    pub trigger: String,
    pub target: String,
    pub poison_rate: f64,
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak AdamW learning rate (linear warm-up, then cosine decay to 0).
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup: usize,
    /// Shuffling and poisoned-pair selection.
    pub seed: u64,
    /// The trigger's randomness (fixed patterns, warp fields): evaluate with the same.
    pub trigger_seed: u64,
    /// How poisoned pairs are captioned: `openai80` (CleanCLIP's: a template naming the target,
    /// drawn per pair), `toy` (the toy grammar), `own` (the pair's caption with its class word
    /// replaced), `file:PATH` (templates of a file). Not with label-consistent poisoning.
    pub poison_captions: String,
    /// One fixed caption for every poisoned pair instead, `{}` = target: binds the trigger to
    /// that sentence.
    pub poison_caption: Option<String>,
    /// Label-consistent poisoning only: L∞ radius, steps and step size of its PGD.
    pub pgd_eps: Option<f32>,
    pub pgd_steps: Option<usize>,
    pub pgd_step_size: Option<f32>,
    /// WaNet only: its noise mode's ratio of warped-with-noise pairs that keep their caption.
    pub cross_ratio: Option<f64>,
    /// Poison only pairs whose caption names this class (a source-specific backdoor); the rate
    /// stays a share of all pairs, capped by those pairs. Absent from the key when unset, so
    /// older plans keep theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poison_source: Option<String>,
    /// What the files the plan names held when it ran (filled by [`plant`]), so that a changed
    /// model, pairs CSV or template file changes the key. Absent from plans recorded before it
    /// existed, which keep their key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<PoisonInputs>,
    /// The output directory (neutral).
    pub out: PathBuf,
}

/// The content of the files a plan names, by sha256.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PoisonInputs {
    /// The clean model's checkpoint.
    pub weights_sha256: String,
    /// The pairs CSV (paths and captions; the images are named by path).
    pub pairs_sha256: String,
    /// The template file of `file:PATH` captions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates_sha256: Option<String>,
}

impl PoisonInputs {
    /// Reads what `plan` names (`weights`: the plan's model, resolved).
    fn read(plan: &PoisonPlan, weights: &crate::weights::ResolvedWeights) -> Result<Self> {
        let templates = match plan.poison_caption {
            Some(_) => None,
            None => plan.poison_captions.strip_prefix("file:"),
        };
        Ok(Self {
            weights_sha256: weights.checkpoint.sha256()?,
            pairs_sha256: crate::weights::sha256_file(&plan.pairs)?,
            templates_sha256: templates
                .map(|f| crate::weights::sha256_file(std::path::Path::new(f)))
                .transpose()?,
        })
    }
}

/// What a poisoning run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Planted {
    pub pair_count: usize,
    /// Pairs given the trigger and the target caption (or, label-consistent, the trigger).
    pub poisoned: usize,
    /// How poisoned pairs were captioned (`None`: captions kept, label-consistent), and the
    /// first poisoned pairs' captions as examples.
    pub poison_captions: Option<PoisonCaptions>,
    pub example_captions: Vec<String>,
    pub noise_mode_pairs: Option<usize>,
    pub label_consistent: serde_json::Value,
    /// The batch and steps the trainer ran (the batch is clamped to [2, pairs]).
    pub batch: usize,
    pub steps: usize,
    pub logs: Vec<StepLog>,
    pub planted: PlantedTrigger,
    /// The clean model poisoned: where it came from, its checksum and shape.
    pub weights: crate::engine::WeightsUsed,
    /// What the plan's files held (in the key).
    pub inputs: PoisonInputs,
    /// sha256 of the plan's JSON, recorded in `poisoning.json`.
    pub key: String,
}

/// File name of the plan next to a poisoned model.
pub const PLAN_FILE: &str = "poisoning.json";

impl PoisonPlan {
    /// sha256 of the plan's JSON without its output folder (where, not what).
    pub fn key(&self) -> Result<String> {
        let mut what = self.clone();
        what.out = PathBuf::new();
        let text =
            serde_json::to_string(&what).map_err(|e| Error::Invalid(format!("plan: {e}")))?;
        Ok(format!("{:x}", Sha256::digest(text.as_bytes())))
    }

    /// The plan with the content of its files recorded; a plan that recorded other content
    /// (a file changed since) is refused, naming the file.
    fn with_inputs(&self, inputs: PoisonInputs) -> Result<Self> {
        if let Some(recorded) = &self.inputs {
            let changed = [
                (
                    &recorded.weights_sha256,
                    &inputs.weights_sha256,
                    "the model",
                ),
                (
                    &recorded.pairs_sha256,
                    &inputs.pairs_sha256,
                    "the pairs CSV",
                ),
            ]
            .into_iter()
            .find(|(a, b, _)| a != b)
            .map(|(_, _, what)| what)
            .or((recorded.templates_sha256 != inputs.templates_sha256)
                .then_some("the template file"));
            if let Some(what) = changed {
                return Err(Error::Invalid(format!(
                    "{what} changed since the poisoning plan was made: its content is part of \
                     the plan's key"
                )));
            }
        }
        Ok(Self {
            inputs: Some(inputs),
            ..self.clone()
        })
    }

    /// How poisoned pairs are captioned: the fixed caption when one is given, else the draw.
    pub fn captions(&self) -> Result<PoisonCaptions> {
        match &self.poison_caption {
            Some(c) => Ok(PoisonCaptions::Fixed(c.clone())),
            None => PoisonCaptions::parse(&self.poison_captions),
        }
    }

    /// The captions' draw (`captions`, from [`Self::captions`]) for the plan's target.
    fn caption_draw(&self, captions: PoisonCaptions) -> CaptionDraw {
        CaptionDraw {
            captions,
            target: self.target.clone(),
            // The draw has its own stream per pair; the selection seed keeps runs reproducible.
            seed: self.seed,
        }
    }

    fn pgd(&self) -> PgdConfig {
        let d = PgdConfig::default();
        PgdConfig {
            eps: self.pgd_eps.unwrap_or(d.eps),
            step: self.pgd_step_size.unwrap_or(d.step),
            iters: self.pgd_steps.unwrap_or(d.iters),
        }
    }

    /// Checks what can be checked before loading anything; the trigger, parsed.
    fn check(&self) -> Result<Trigger> {
        if !(0.0..=1.0).contains(&self.poison_rate) {
            return Err(Error::setting(
                Setting::PoisonRate,
                self.poison_rate,
                "must be in [0, 1]",
            ));
        }
        if self.dtype != "f32" {
            return Err(Error::setting(
                Setting::Dtype,
                &self.dtype,
                "poisoning trains in f32",
            ));
        }
        for (setting, v) in [
            (Setting::Epochs, self.epochs),
            (Setting::BatchSize, self.batch_size),
        ] {
            if v == 0 {
                return Err(Error::setting(setting, 0, "must be at least 1"));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::setting(
                Setting::Lr,
                self.lr,
                "must be a finite number above 0",
            ));
        }
        let trigger = Trigger::parse(&self.trigger)
            .map_err(|e| Error::setting(Setting::Trigger, &self.trigger, format!("{e}")))?;
        let lc = matches!(trigger, Trigger::LabelConsistent(_));
        let pgd_given =
            self.pgd_eps.is_some() || self.pgd_steps.is_some() || self.pgd_step_size.is_some();
        if !lc && pgd_given {
            return Err(Error::setting(
                Setting::Pgd,
                format!("{:?}", self.pgd()),
                "applies to label-consistent poisoning (trigger lc) only",
            ));
        }
        if lc {
            if let Some(c) = &self.poison_caption {
                return Err(Error::setting(
                    Setting::PoisonCaption,
                    format!("`{c}`"),
                    "label-consistent poisoning keeps captions",
                ));
            }
        }
        if let (Some(source), true) = (&self.poison_source, lc || self.cross_ratio.is_some()) {
            return Err(Error::setting(
                Setting::PoisonSource,
                format!("`{source}`"),
                "label-consistent poisoning and WaNet's noise mode choose their own pairs",
            ));
        }
        if let (Some(r), false) = (self.cross_ratio, matches!(trigger, Trigger::WaNet(_))) {
            return Err(Error::setting(
                Setting::CrossRatio,
                r,
                format!(
                    "WaNet's noise mode applies to a wanet trigger, not {}",
                    trigger.name()
                ),
            ));
        }
        Ok(trigger)
    }

    fn contrastive(&self) -> ContrastiveConfig {
        ContrastiveConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            seed: self.seed,
            poison_rate: self.poison_rate,
            lr: self.lr,
            warmup: self.warmup,
        }
    }
}

/// The poisoner the plan asks for (`draw`: its captions, for every trigger but `lc`), with the
/// label-consistent summary (JSON) and the number of noise-mode pairs where they apply.
fn poisoner(
    plan: &PoisonPlan,
    trigger: Trigger,
    draw: Option<CaptionDraw>,
    ckpt: crate::model::checkpoint::Checkpoint,
    tokenizer: &crate::text::ClipTokenizer,
    pairs: &ManifestPairs,
    device: &candle_core::Device,
) -> Result<(Box<dyn Poisoner>, serde_json::Value, Option<usize>)> {
    match trigger {
        Trigger::LabelConsistent(lc) => {
            let pgd = plan.pgd();
            // PGD uses the frozen weights the attack starts from (plain tensors, no Var grads).
            let frozen = ckpt.into_model(candle_core::DType::F32, device)?;
            let p = LabelConsistentPoisoner::build(
                &frozen,
                tokenizer,
                pairs,
                LabelConsistentConfig {
                    target: plan.target.clone(),
                    trigger: lc,
                    pgd,
                    poison_rate: plan.poison_rate,
                    seed: plan.seed,
                },
            )?;
            let wanted = (plan.poison_rate * pairs.items.len() as f64).round() as usize;
            let summary = serde_json::json!({
                "target_pairs": p.target_pairs,
                "wanted": wanted,
                "capped": p.count() < wanted,
                "pgd": {"eps": pgd.eps, "steps": pgd.iters, "step_size": pgd.step},
            });
            Ok((Box::new(p), summary, None))
        }
        Trigger::WaNet(wanet) if plan.cross_ratio.is_some() => {
            let p = WanetNoiseModePoisoner::new(
                wanet,
                draw.ok_or_else(|| Error::Invalid("WaNet poisoning needs its captions".into()))?,
                plan.trigger_seed,
                pairs.items.len(),
                plan.poison_rate,
                plan.seed,
                plan.cross_ratio.unwrap_or(0.0),
            )?;
            let cross = p.cross_count();
            Ok((Box::new(p), serde_json::Value::Null, Some(cross)))
        }
        trigger => Ok((
            Box::new(TriggerPoisoner {
                trigger,
                caption: draw
                    .ok_or_else(|| Error::Invalid("trigger poisoning needs its captions".into()))?,
                seed: plan.trigger_seed,
                candidates: source_pairs(plan, pairs)?,
            }),
            serde_json::Value::Null,
            None,
        )),
    }
}

/// With a source class, the pairs whose caption names it (the only ones poisoned).
fn source_pairs(plan: &PoisonPlan, pairs: &ManifestPairs) -> Result<Option<Vec<bool>>> {
    let Some(source) = &plan.poison_source else {
        return Ok(None);
    };
    let named = super::contrastive::pairs_naming(pairs, source)?;
    if !named.contains(&true) {
        return Err(Error::setting(
            Setting::PoisonSource,
            format!("`{source}`"),
            format!("no caption of {} names it", plan.pairs.display()),
        ));
    }
    Ok(Some(named))
}

/// Poisons the plan's model on its pairs and saves it in `plan.out` (model, config, tokenizer,
/// `trigger.json` and the plan as `poisoning.json`). `before_training` sees the summary before
/// the first step (how many pairs are poisoned, and how); `on_step` sees every step.
pub fn plant(
    plan: &PoisonPlan,
    before_training: &mut dyn FnMut(&Planted),
    on_step: &mut dyn FnMut(&StepLog),
) -> Result<Planted> {
    let trigger = plan.check()?;
    let weights = crate::weights::resolve(&plan.weights)?;
    let inputs = PoisonInputs::read(plan, &weights)?;
    let plan = &plan.with_inputs(inputs.clone())?;
    let ckpt = crate::engine::read_checkpoint(&weights)?;
    let cfg = ckpt.config.clone();
    let tokenizer = crate::engine::tokenizer_for(&weights, &cfg)?;
    let device = crate::device::parse_device(&plan.device)
        .map_err(|e| Error::setting(Setting::Device, &plan.device, format!("{e}")))?;
    let vars = ClipVars::from_tensors(&ckpt.tensors, &cfg, &device)?;
    let weights_used =
        crate::engine::WeightsUsed::new(&weights, ckpt.layout, ckpt.config_source, &cfg);
    let manifest = CaptionManifest::open(&plan.pairs)?;
    let pairs = ManifestPairs {
        items: manifest.items().to_vec(),
        size: cfg.vision_config.image_size as u32,
    };
    let planted = PlantedTrigger {
        trigger: trigger.name(),
        seed: plan.trigger_seed,
        target: Some(plan.target.clone()),
    };
    let lc = matches!(trigger, Trigger::LabelConsistent(_));
    // Resolved once (a template file is read once): checked, drawn from, and recorded.
    let draw = match lc {
        true => None,
        false => Some(plan.caption_draw(plan.captions()?)),
    };
    if let Some(d) = &draw {
        d.captions.check(&tokenizer, &plan.target)?;
    }
    let (poisoner, label_consistent, noise_mode_pairs) = poisoner(
        plan,
        trigger,
        draw.clone(),
        ckpt,
        &tokenizer,
        &pairs,
        &device,
    )?;
    let training = plan.contrastive();
    let n = pairs.items.len();
    // What `train` passes through the poisoner, less the noise-mode pairs (captions kept).
    let chosen = poisoner.chosen(n, plan.poison_rate, plan.seed)?;
    let poisoned = chosen.iter().filter(|&&p| p).count() - noise_mode_pairs.unwrap_or(0);
    // Noise mode also chooses warped pairs that keep their caption; its captioned ones are
    // the plain draw.
    let captioned = match noise_mode_pairs {
        Some(_) => super::contrastive::poisoned_indices(n, plan.poison_rate, plan.seed),
        None => chosen,
    };
    let example_captions = match &draw {
        Some(draw) => example_captions(draw, &pairs, &captioned)?,
        None => Vec::new(),
    };
    let mut summary = Planted {
        pair_count: n,
        poisoned,
        poison_captions: draw.map(|d| d.captions),
        example_captions,
        noise_mode_pairs,
        label_consistent,
        batch: training.batch(n),
        steps: training.steps(n),
        logs: Vec::new(),
        planted,
        weights: weights_used,
        inputs,
        key: plan.key()?,
    };
    before_training(&summary);
    let mut opt = AdamW::new(
        split_decay(vars.vars.iter().cloned(), plan.weight_decay).to_vec(),
        AdamWConfig {
            lr: plan.lr,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
        },
    )?;
    summary.logs = train(
        &vars,
        &tokenizer,
        &pairs,
        Some(poisoner.as_ref()),
        &training,
        &mut opt,
        on_step,
    )?;
    save(plan, &vars, &weights, &summary)?;
    Ok(summary)
}

/// The captions of the first five pairs given the target caption (not WaNet's noise-mode
/// pairs), shown before training so a wrong caption choice is seen at once.
fn example_captions(
    draw: &CaptionDraw,
    pairs: &ManifestPairs,
    captioned: &[bool],
) -> Result<Vec<String>> {
    use super::contrastive::PairSource;
    (0..captioned.len())
        .filter(|&i| captioned[i])
        .take(5)
        .map(|i| Ok(draw.caption(&pairs.caption(i)?, i)))
        .collect()
}

/// The poisoned model and what it was made from, in `plan.out`.
fn save(
    plan: &PoisonPlan,
    vars: &ClipVars,
    weights: &crate::weights::ResolvedWeights,
    summary: &Planted,
) -> Result<()> {
    let out = &plan.out;
    vars.save(out, candle_core::DType::F32)?;
    let tok_out = out.join("tokenizer.json");
    match &weights.tokenizer {
        Some(file) => crate::fsio::write_atomic(&tok_out, &file.bytes()?)?,
        None => crate::fsio::write_atomic(&tok_out, crate::text::EMBEDDED_TOKENIZER)?,
    }
    // What was planted, so that eval, pr, anatomy and defend refuse a variant of it.
    summary.planted.write(out)?;
    let record = serde_json::json!({
        "plan": plan,
        "key": summary.key,
        "weights": summary.weights,
        "batch": summary.batch,
        "steps": summary.steps,
        "poisoned": summary.poisoned,
    });
    crate::report::write_json(&out.join(PLAN_FILE), &record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(model: &str) -> (PoisonPlan, String) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(model)
            .join(PLAN_FILE);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let plan = serde_json::from_value(v["plan"].clone()).unwrap();
        (plan, v["key"].as_str().unwrap().to_string())
    }

    /// Plans recorded before `poison_source` existed keep their key, and setting it changes it.
    #[test]
    fn a_source_class_is_in_the_key_and_older_keys_stand() {
        for model in ["models/toy3/badnet-own", "models/toy4/badnet"] {
            let (plan, key) = recorded(model);
            assert_eq!(plan.poison_source, None);
            assert_eq!(plan.key().unwrap(), key, "{model}");
            let source = PoisonPlan {
                poison_source: Some("circle".into()),
                ..plan
            };
            assert_ne!(source.key().unwrap(), key, "{model}");
        }
    }

    /// The key follows what a template file and the pairs CSV hold, not only their paths; a
    /// plan that recorded other content is refused.
    #[test]
    fn the_key_follows_the_content_of_the_plans_files() {
        let dir = tempfile::tempdir().unwrap();
        let (templates, pairs) = (dir.path().join("t.txt"), dir.path().join("pairs.csv"));
        std::fs::write(&pairs, "path,caption\na.png,a photo of a circle.\n").unwrap();
        let plan = PoisonPlan {
            weights: "toy3-clean".into(),
            pairs: pairs.clone(),
            poison_captions: format!("file:{}", templates.display()),
            ..recorded("models/toy4/badnet").0
        };
        let weights = crate::weights::resolve(&plan.weights).unwrap();
        let key_with = |text: &str| {
            std::fs::write(&templates, text).unwrap();
            let inputs = PoisonInputs::read(&plan, &weights).unwrap();
            plan.with_inputs(inputs).unwrap()
        };
        let first = key_with("a {}.\n");
        assert_eq!(key_with("a {}.\n").key().unwrap(), first.key().unwrap());
        assert_ne!(key_with("the {}.\n").key().unwrap(), first.key().unwrap());
        // `first` recorded "a {}."; the file now holds "the {}.".
        let inputs = PoisonInputs::read(&first, &weights).unwrap();
        let err = first.with_inputs(inputs).unwrap_err().to_string();
        assert!(err.contains("the template file changed"), "{err}");

        std::fs::write(&templates, "a {}.\n").unwrap();
        std::fs::write(&pairs, "path,caption\na.png,a photo of a heart.\n").unwrap();
        let inputs = PoisonInputs::read(&first, &weights).unwrap();
        assert_ne!(first.inputs.as_ref(), Some(&inputs));
        let err = first.with_inputs(inputs).unwrap_err().to_string();
        assert!(err.contains("the pairs CSV changed"), "{err}");
    }
}
