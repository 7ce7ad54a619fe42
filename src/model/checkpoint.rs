//! Reading a checkpoint file (safetensors or a PyTorch zip pickle, HF or OpenAI layout) into a
//! validated `Clip`. No pickle code is executed: candle reads only the tensor records.

use super::clip::Clip;
use super::config::ClipConfig;
use super::open_clip;
use super::openai;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Reads every tensor of a checkpoint onto the CPU. `.safetensors` is read as such; anything else
/// as a PyTorch zip archive, where the state dict may be wrapped as `{"state_dict": …}`.
/// A `module.` prefix (DataParallel) is stripped.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::MissingFile(path.to_path_buf()));
    }
    let corrupt = |e: candle_core::Error| Error::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    let tensors: Vec<(String, Tensor)> = if is_safetensors {
        candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(corrupt)?
            .into_iter()
            .collect()
    } else {
        let mut found = Vec::new();
        for key in [None, Some("state_dict"), Some("model")] {
            match candle_core::pickle::read_all_with_key(path, key) {
                Ok(t) if !t.is_empty() => {
                    found = t;
                    break;
                }
                Ok(_) => {}
                Err(e) if key.is_none() => return Err(corrupt(e)),
                Err(_) => {}
            }
        }
        found
    };
    named(tensors, path)
}

/// Reads every tensor of a safetensors file held in memory (e.g. embedded in the binary) onto
/// the CPU; `origin` names it in errors.
pub fn read_safetensors_bytes(bytes: &[u8], origin: &Path) -> Result<HashMap<String, Tensor>> {
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| {
        Error::Checkpoint {
            path: origin.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    named(tensors.into_iter().collect(), origin)
}

/// A state dict by name, refused when empty, with a `module.` prefix stripped.
fn named(tensors: Vec<(String, Tensor)>, path: &Path) -> Result<HashMap<String, Tensor>> {
    if tensors.is_empty() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: "no tensors found (expected a state dict, optionally under `state_dict`)"
                .into(),
        });
    }
    Ok(tensors
        .into_iter()
        .map(|(k, v)| match k.strip_prefix("module.") {
            Some(stripped) => (stripped.to_string(), v),
            None => (k, v),
        })
        .collect())
}

/// A VarBuilder backend that records the (name, shape) of every tensor the model asks for and
/// hands back zero-cost broadcast zeros: the model's exact parameter list without loading weights.
#[derive(Clone, Default)]
struct ShapeRecorder(Arc<Mutex<Vec<NamedShape>>>);

/// A tensor name with its dimensions.
pub type NamedShape = (String, Vec<usize>);

impl SimpleBackend for ShapeRecorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .lock()
            .map_err(|_| candle_core::Error::Msg("shape recorder poisoned".into()))?
            .push((name.to_string(), s.dims().to_vec()));
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("shape recorder cannot serve `{name}` without a shape")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Every parameter the model for `cfg` loads, with its shape, in load order.
pub fn expected_tensors(cfg: &ClipConfig) -> Result<Vec<NamedShape>> {
    let recorder = ShapeRecorder::default();
    let vb = VarBuilder::from_backend(Box::new(recorder.clone()), DType::F32, Device::Cpu);
    Clip::new(vb, cfg)?;
    let recorded = recorder
        .0
        .lock()
        .map_err(|_| Error::Invalid("shape recorder poisoned".into()))?
        .clone();
    Ok(recorded)
}

/// Parameter counts of the model for `cfg`: (vision tower, text tower, total).
pub fn parameter_counts(cfg: &ClipConfig) -> Result<ParameterCounts> {
    let mut counts = ParameterCounts::default();
    for (name, shape) in expected_tensors(cfg)? {
        let n: usize = shape.iter().product();
        counts.total += n;
        if name.starts_with("vision_model.") {
            counts.vision += n;
        } else if name.starts_with("text_model.") {
            counts.text += n;
        }
    }
    Ok(counts)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ParameterCounts {
    pub vision: usize,
    pub text: usize,
    /// Both towers, both projections and the logit scale.
    pub total: usize,
}

/// Where a checkpoint's config came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigSource {
    /// A transformers config.json (or a config given by the caller).
    Given,
    /// open_clip's `open_clip_config.json` (or a bare open_clip model config).
    OpenClip,
    /// Inferred from an OpenAI-layout state dict's shapes (heads = width / 64, quick_gelu,
    /// pooling at the argmax of the ids).
    Inferred,
    /// None given and nothing to infer from: the ViT-B/32 default, checked against the shapes.
    Default,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Given => "config.json",
            Self::OpenClip => "open_clip_config.json",
            Self::Inferred => "inferred from the checkpoint's shapes (OpenAI's rules: heads = width / 64, quick_gelu assumed, pooling at the argmax of the ids)",
            Self::Default => "none found: the ViT-B/32 default, checked against the shapes",
        })
    }
}

impl ConfigSource {
    /// True when nothing stated the MLP activation: a state dict's tensors are the same for
    /// QuickGELU (OpenAI, open_clip `*-quickgelu`) and GELU (open_clip `ViT-B-32` and most
    /// open_clip trainings), so QuickGELU was assumed.
    pub fn activation_assumed(self) -> bool {
        matches!(self, Self::Inferred | Self::Default)
    }
}

/// What `rvpt info`, the warning and reports say when the activation was assumed.
pub const ACTIVATION_ASSUMED: &str =
    "the checkpoint cannot tell QuickGELU from GELU and no config \
     states it: QuickGELU (OpenAI's) is assumed. If the model was trained with open_clip's GELU \
     (e.g. `ViT-B-32`, not `ViT-B-32-quickgelu`), put its open_clip_config.json beside the \
     checkpoint (the hub file, or open_clip's model_configs/<model>.json renamed; GELU unless \
     it says \"quick_gelu\": true) or a transformers config.json with hidden_act \"gelu\"";

/// A model config file: transformers' `config.json` or open_clip's `open_clip_config.json`,
/// told apart by their content (open_clip's has `model_cfg` or `vision_cfg`).
pub fn read_config_file(path: &Path) -> Result<(ClipConfig, ConfigSource)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    read_config_text(&text, path)
}

/// As [`read_config_file`], for a config's text; `path` names it in errors.
pub fn read_config_text(text: &str, path: &Path) -> Result<(ClipConfig, ConfigSource)> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if open_clip::is_open_clip_config(&json) {
        Ok((open_clip::from_json(&json, path)?, ConfigSource::OpenClip))
    } else {
        Ok((ClipConfig::from_json_str(text, path)?, ConfigSource::Given))
    }
}

pub struct Checkpoint {
    pub tensors: HashMap<String, Tensor>,
    pub config: ClipConfig,
    /// "hf" or "openai".
    pub layout: &'static str,
    pub config_source: ConfigSource,
}

impl Checkpoint {
    /// Reads `path`; `config` comes from a config.json when given, else (OpenAI layout) from the
    /// shapes, else the ViT-B/32 default.
    pub fn read(path: &Path, config: Option<ClipConfig>) -> Result<Self> {
        Self::read_with(path, config.map(|c| (c, ConfigSource::Given)))
    }

    /// As [`Self::read`], with the config's source (see [`read_config_file`]).
    pub fn read_with(path: &Path, config: Option<(ClipConfig, ConfigSource)>) -> Result<Self> {
        Self::from_tensors(read_tensors(path)?, config, path)
    }

    /// As [`Self::read_with`], for a state dict already read from `path` (which names it in
    /// errors).
    pub fn from_tensors(
        raw: HashMap<String, Tensor>,
        config: Option<(ClipConfig, ConfigSource)>,
        path: &Path,
    ) -> Result<Self> {
        let given = config.as_ref().map(|(_, source)| *source);
        let config = config.map(|(c, _)| c);
        let (tensors, inferred, layout) = if openai::is_openai_layout(&raw) {
            openai::refuse_unsupported(&raw, path)?;
            // Inferred only when no config is given: what cannot be inferred is refused there.
            let inferred = if given.is_some() {
                None
            } else {
                Some(openai::infer_config(&raw, path)?)
            };
            (openai::to_hf_names(raw, path)?, inferred, "openai")
        } else if raw.contains_key("vision_model.embeddings.patch_embedding.weight") {
            (raw, None, "hf")
        } else {
            if raw.keys().any(|k| k.starts_with("visual.")) {
                // An open_clip model of another kind (timm tower, …): named if known.
                openai::refuse_unsupported(&raw, path)?;
            }
            let mut names: Vec<_> = raw.keys().take(5).cloned().collect();
            names.sort();
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                reason: format!(
                    "not a CLIP state dict: neither `visual.conv1.weight` (OpenAI) nor \
                     `vision_model.embeddings.patch_embedding.weight` (transformers) is present; \
                     first names: {names:?}"
                ),
            });
        };
        let config_source = match (given, inferred.is_some()) {
            (Some(source), _) => source,
            (None, true) => ConfigSource::Inferred,
            (None, false) => ConfigSource::Default,
        };
        let config = config.or(inferred).unwrap_or_default();
        Ok(Self {
            tensors,
            config,
            layout,
            config_source,
        })
    }

    /// Checks every expected tensor is present with the expected shape; names the first culprit.
    pub fn validate(&self, path: &Path) -> Result<()> {
        for (name, shape) in expected_tensors(&self.config)? {
            let t = self
                .tensors
                .get(&name)
                .ok_or_else(|| Error::MissingTensor {
                    name: name.clone(),
                    source_file: path.to_path_buf(),
                })?;
            if t.dims() != shape.as_slice() {
                return Err(Error::TensorShape {
                    name,
                    expected: shape,
                    actual: t.dims().to_vec(),
                    source_file: path.to_path_buf(),
                });
            }
        }
        Ok(())
    }

    /// Builds the model on `device` in `dtype`.
    pub fn into_model(self, dtype: DType, device: &Device) -> Result<Clip> {
        let vb = VarBuilder::from_tensors(self.tensors, dtype, device);
        Ok(Clip::new(vb, &self.config)?)
    }
}

/// Reads, validates and builds a model from one checkpoint file.
pub fn load_clip(
    path: &Path,
    config: Option<ClipConfig>,
    dtype: DType,
    device: &Device,
) -> Result<Clip> {
    let ckpt = Checkpoint::read(path, config)?;
    ckpt.validate(path)?;
    ckpt.into_model(dtype, device)
}
