//! A method's fully resolved configuration: everything that can change its numbers, recorded on
//! its result row. Its hash is the key that decides whether an earlier result (or checkpoint,
//! or fine-tuned model) may be reused: equal keys only.

use super::case::{Case, DefendSettings};
use crate::data::ImageFolder;
use crate::defences::{cleanclip::CleanClipConfig, linear_probe::LinearProbeConfig, MethodSpec};
use crate::error::{Error, Result};
use crate::text::Templates;
use crate::train::rvpt::{PromptPlacement, RvptConfig, ShotSampler};
use sha2::{Digest, Sha256};

/// The k shots every method of a case trains on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShotsConfig {
    pub per_class: usize,
    pub sampler: ShotSampler,
    pub seed: u64,
    pub without_target_class: bool,
}

/// What an image folder holds, independent of where it is: its classes and every file's
/// relative path, class and size, hashed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FolderId {
    pub images: usize,
    pub sha256: String,
}

impl FolderId {
    pub fn of(folder: &ImageFolder) -> Result<Self> {
        let mut h = Sha256::new();
        for c in folder.classes() {
            h.update(c.as_bytes());
            h.update([0]);
        }
        let root = folder.root();
        let mut rows: Vec<(String, usize, u64)> = folder
            .samples()
            .iter()
            .map(|(p, label)| {
                let size = std::fs::metadata(p).map_err(|e| Error::io(p, e))?.len();
                let rel = p.strip_prefix(root).unwrap_or(p).display().to_string();
                Ok((rel, *label, size))
            })
            .collect::<Result<_>>()?;
        rows.sort();
        for (rel, label, size) in &rows {
            h.update(format!("{rel}\t{label}\t{size}\n").as_bytes());
        }
        Ok(Self {
            images: rows.len(),
            sha256: format!("{:x}", h.finalize()),
        })
    }
}

/// The data a case is trained and measured on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataId {
    pub train: FolderId,
    pub test: FolderId,
    pub transfer: Vec<FolderId>,
    /// CleanCLIP's own clean pairs (a CSV), by content.
    pub cleanclip_pairs_sha256: Option<String>,
}

/// How a method is measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalConfig {
    /// The seed of the trigger (and perturbations): the one it was planted with.
    pub trigger_seed: u64,
    pub perturbations: Vec<String>,
    pub batch: usize,
    /// Where the trigger's push comes from, measured too.
    pub anatomy: bool,
    /// The other templates CA and ASR are reported under.
    pub asr_templates: Vec<Templates>,
}

/// What the weights were built as where their checkpoint's digest does not say it (a config
/// file beside it can make one state dict a GELU or a QuickGELU model, with its own mean and
/// std). Recorded only when not QuickGELU with CLIP's preprocessing, what every model was
/// built as before configs said otherwise, so the keys of earlier runs stand.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WeightsModel {
    pub activation: crate::model::Activation,
    pub preprocess: crate::model::Preprocess,
}

impl WeightsModel {
    /// None for what earlier runs all were: QuickGELU in both towers, CLIP's statistics.
    pub fn of(config: &crate::model::ClipConfig) -> Option<Self> {
        use crate::model::Activation::QuickGelu;
        let (v, t) = (&config.vision_config, &config.text_config);
        let usual =
            v.hidden_act == QuickGelu && t.hidden_act == QuickGelu && config.preprocess.is_clip();
        (!usual).then(|| Self {
            activation: v.hidden_act,
            preprocess: config.preprocess.clone(),
        })
    }
}

/// The weights as a run key records them: the checkpoint's digest and [`WeightsModel`].
#[derive(Debug, Clone, Default)]
pub struct WeightsKey {
    pub sha256: Option<String>,
    pub model: Option<WeightsModel>,
}

impl WeightsKey {
    pub fn of(engine: &crate::engine::Engine) -> Self {
        Self {
            sha256: engine.checkpoint_sha256().map(str::to_string),
            model: WeightsModel::of(engine.model.config()),
        }
    }
}

/// Everything that can change one method's numbers on one case.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunConfig {
    pub method: String,
    /// Each stage's settings; absent for a stage the method does not have.
    pub cleanclip: Option<CleanClipConfig>,
    /// The prompts' training (its FR weight in `loss.lambda`, its blocks as resolved).
    pub prompts: Option<RvptConfig>,
    pub linear_probe: Option<LinearProbeConfig>,
    pub shots: ShotsConfig,
    pub templates: Templates,
    pub weights: String,
    pub weights_sha256: Option<String>,
    /// Absent for QuickGELU with CLIP's preprocessing (see [`WeightsModel`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_model: Option<WeightsModel>,
    pub trigger: String,
    pub target: String,
    pub data: DataId,
    pub eval: EvalConfig,
    /// `cpu`, `cuda` or `metal` (the ordinal changes no number).
    pub device: String,
    pub dtype: String,
}

impl RunConfig {
    /// The configuration of `method` on `case` with the prompts on `blocks` of the model.
    pub fn resolve(
        method: &MethodSpec,
        case: &Case,
        s: &DefendSettings,
        weights: &WeightsKey,
        blocks: std::ops::Range<usize>,
        data: &DataId,
    ) -> Self {
        let prompts = method.lambda.map(|lambda| {
            let mut cfg = s.rvpt.clone();
            cfg.loss.lambda = lambda;
            cfg.blocks = PromptPlacement::Range {
                start: blocks.start,
                end: blocks.end,
            };
            cfg
        });
        let device = crate::device::device_name(&s.device);
        Self {
            method: method.name.clone(),
            cleanclip: method.cleanclip.then(|| s.cleanclip.clone()),
            prompts,
            linear_probe: method.linear_probe.then(|| s.linear_probe.clone()),
            shots: ShotsConfig {
                per_class: s.rvpt.shots,
                sampler: s.rvpt.sampler,
                seed: s.rvpt.seed,
                without_target_class: s.without_target_class,
            },
            templates: s.templates.clone(),
            weights: case.weights.clone(),
            weights_sha256: weights.sha256.clone(),
            weights_model: weights.model.clone(),
            trigger: case.trigger.clone(),
            target: case.target.clone(),
            data: DataId {
                // CleanCLIP's pairs matter to CleanCLIP only.
                cleanclip_pairs_sha256: data
                    .cleanclip_pairs_sha256
                    .clone()
                    .filter(|_| method.cleanclip),
                ..data.clone()
            },
            eval: EvalConfig {
                trigger_seed: s.eval_seed,
                perturbations: s.perturbations.iter().map(|p| p.name()).collect(),
                batch: s.eval_batch,
                anatomy: s.anatomy,
                asr_templates: s.asr_templates.clone(),
            },
            device: device.split(':').next().unwrap_or("cpu").to_string(),
            dtype: format!("{:?}", s.dtype).to_lowercase(),
        }
    }

    pub fn to_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self).map_err(|e| Error::Invalid(format!("run config: {e}")))
    }

    /// sha256 of the configuration's JSON (fields in declaration order, so stable).
    pub fn key(&self) -> Result<String> {
        let text =
            serde_json::to_string(self).map_err(|e| Error::Invalid(format!("run config: {e}")))?;
        Ok(format!("{:x}", Sha256::digest(text.as_bytes())))
    }
}
