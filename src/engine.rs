//! A loaded model with its tokenizer and provenance: what the CLI commands share.

use crate::error::{Error, Result};
use crate::eval::{Classifier, ImageEncoder};
use crate::model::{read_config_text, Checkpoint, Clip, ClipConfig, ConfigSource};
use crate::text::{ClipTokenizer, Templates};
use crate::train::rvpt::{DeepPrompts, PromptCheckpoint, PromptedEncoder};
use crate::weights::{resolve, ResolvedWeights, StoredFile};
use candle_core::{DType, Device, Tensor, D};
use std::path::{Path, PathBuf};

pub struct Engine {
    pub model: Clip,
    pub tokenizer: ClipTokenizer,
    pub weights: ResolvedWeights,
    /// "hf" or "openai": the layout the checkpoint was stored in.
    pub layout: &'static str,
    /// Whether the config was read, inferred from the shapes, or the default.
    pub config_source: crate::model::ConfigSource,
    pub device: Device,
    pub dtype: DType,
}

/// The weights a model was loaded from, as every report records them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WeightsUsed {
    /// How they were found ("manifest:NAME (path)", "hub:REPO@REV", "local").
    pub source: String,
    pub sha256: Option<String>,
    /// "hf" or "openai".
    pub layout: String,
    /// The model's shape, as read from its config or inferred from the checkpoint.
    pub config: crate::model::ClipConfig,
    /// Where `config` came from: a config.json, inferred from the shapes, or the default.
    pub config_source: crate::model::ConfigSource,
    /// What was assumed rather than read (the MLP activation of a bare state dict); absent when
    /// the config stated everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assumption: Option<String>,
}

impl WeightsUsed {
    /// From resolved weights and what reading their checkpoint gave.
    pub fn new(
        weights: &ResolvedWeights,
        layout: &str,
        config_source: crate::model::ConfigSource,
        config: &crate::model::ClipConfig,
    ) -> Self {
        Self {
            source: weights.source.clone(),
            sha256: weights.checkpoint_sha256().map(str::to_owned),
            layout: layout.into(),
            config: config.clone(),
            config_source,
            assumption: config_source
                .activation_assumed()
                .then(|| crate::model::ACTIVATION_ASSUMED.to_string()),
        }
    }
}

/// One image's top-k zero-shot prediction.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Prediction {
    pub image: PathBuf,
    /// (label, probability), most probable first.
    pub top: Vec<(String, f32)>,
}

impl Engine {
    /// Resolves `spec` (see `weights::resolve`), reads and validates the checkpoint, and loads
    /// the tokenizer next to it, or the embedded CLIP tokenizer when there is none.
    pub fn load(spec: &str, device: &Device, dtype: DType) -> Result<Self> {
        let weights = resolve(spec)?;
        Self::from_resolved(weights, device, dtype)
    }

    pub fn from_resolved(weights: ResolvedWeights, device: &Device, dtype: DType) -> Result<Self> {
        let ckpt = read_checkpoint(&weights)?;
        let (layout, config_source) = (ckpt.layout, ckpt.config_source);
        let model = ckpt.into_model(dtype, device)?;
        let tokenizer = tokenizer_for(&weights, model.config())?;
        Ok(Self {
            model,
            tokenizer,
            weights,
            layout,
            config_source,
            device: device.clone(),
            dtype,
        })
    }

    pub fn image_size(&self) -> u32 {
        self.model.config().vision_config.image_size as u32
    }

    /// sha256 of the checkpoint file the model was loaded from.
    pub fn checkpoint_sha256(&self) -> Option<&str> {
        self.weights.checkpoint_sha256()
    }

    /// The weights as reports record them.
    pub fn weights_used(&self) -> WeightsUsed {
        WeightsUsed::new(
            &self.weights,
            self.layout,
            self.config_source,
            self.model.config(),
        )
    }

    /// Loads an RVPT prompt checkpoint for this model; refuses prompts trained on other weights.
    pub fn load_prompts(&self, path: &Path) -> Result<DeepPrompts> {
        let ck = PromptCheckpoint::load(path, &self.device)?;
        if let Some(actual) = self.checkpoint_sha256() {
            if !ck.meta.base_sha256.is_empty() && ck.meta.base_sha256 != actual {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    reason: format!(
                        "prompts were trained on weights with sha256 {}, these weights have {actual}",
                        ck.meta.base_sha256
                    ),
                });
            }
        }
        Ok(ck.prompts)
    }

    /// The image encoder to run: the model itself, or the model with `prompts` (checked to fit).
    pub fn encoder<'a>(
        &'a self,
        prompts: Option<&'a DeepPrompts>,
    ) -> Result<Box<dyn ImageEncoder + 'a>> {
        encoder(&self.model, prompts)
    }

    /// A zero-shot classifier over `classes` (text embeddings from `templates`) whose images go
    /// through `encoder` (the plain model, or a prompted one).
    pub fn zero_shot<'a>(
        &'a self,
        encoder: &'a dyn ImageEncoder,
        classes: &[String],
        templates: Templates,
    ) -> Result<Classifier<'a>> {
        Classifier::new(
            &self.model,
            encoder,
            &self.tokenizer,
            classes,
            templates,
            &self.device,
        )
    }

    /// Zero-shot classification with "a photo of a {label}.", top `k` per image, through
    /// `encoder` (the plain model, or a prompted one).
    pub fn classify(
        &self,
        encoder: &dyn ImageEncoder,
        paths: &[PathBuf],
        labels: &[String],
        k: usize,
    ) -> Result<Vec<Prediction>> {
        if labels.is_empty() {
            return Err(Error::EmptyLabels);
        }
        if paths.is_empty() {
            return Err(Error::Invalid("no images given".into()));
        }
        let zs = self.zero_shot(encoder, labels, Templates::Single)?;
        let size = self.image_size();
        let mut out = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(32) {
            let images = chunk
                .iter()
                .map(|p| crate::image::load_unit(p, size, &Device::Cpu))
                .collect::<Result<Vec<_>>>()?;
            let logits = zs.forward(&Tensor::stack(&images, 0)?)?.1;
            let probs = candle_nn::ops::softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?
                .to_vec2::<f32>()?;
            for (path, p) in chunk.iter().zip(probs) {
                let mut ranked: Vec<(String, f32)> = labels.iter().cloned().zip(p).collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                ranked.truncate(k.max(1));
                out.push(Prediction {
                    image: path.clone(),
                    top: ranked,
                });
            }
        }
        Ok(out)
    }
}

/// The image encoder to run: `model` itself, or `model` with `prompts` (checked to fit).
pub fn encoder<'a>(
    model: &'a Clip,
    prompts: Option<&'a DeepPrompts>,
) -> Result<Box<dyn ImageEncoder + 'a>> {
    Ok(match prompts {
        Some(p) => Box::new(PromptedEncoder::new(&model.vision, p)?),
        None => Box::new(model),
    })
}

/// Reads and validates the checkpoint of resolved weights, with their config file if any
/// (transformers' config.json or open_clip's open_clip_config.json). Warns on stderr, once per
/// process, when the activation had to be assumed.
pub fn read_checkpoint(weights: &ResolvedWeights) -> Result<Checkpoint> {
    let config = weights.config.as_ref().map(config_file).transpose()?;
    let origin = weights.checkpoint.path();
    let raw = match &weights.checkpoint {
        StoredFile::Disk(path) => crate::model::checkpoint::read_tensors(path)?,
        StoredFile::Embedded(file) => {
            crate::model::checkpoint::read_safetensors_bytes(file.bytes, origin)?
        }
    };
    let ckpt = Checkpoint::from_tensors(raw, config, origin)?;
    ckpt.validate(origin)?;
    if ckpt.config_source.activation_assumed() {
        use std::sync::atomic::{AtomicBool, Ordering};
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            eprintln!(
                "warning: {}: {}",
                weights.checkpoint,
                crate::model::ACTIVATION_ASSUMED
            );
        }
    }
    Ok(ckpt)
}

/// The model's config without reading its tensors when a config file is there; otherwise it
/// is inferred from the checkpoint's shapes (read in full).
pub fn read_config(weights: &ResolvedWeights) -> Result<ClipConfig> {
    match &weights.config {
        Some(file) => Ok(config_file(file)?.0),
        None => Ok(read_checkpoint(weights)?.config),
    }
}

/// A config file on disk or embedded (see `model::read_config_file`).
fn config_file(file: &StoredFile) -> Result<(ClipConfig, ConfigSource)> {
    let bytes = file.bytes()?;
    let text = std::str::from_utf8(&bytes).map_err(|e| Error::Config {
        path: file.path().to_path_buf(),
        reason: format!("not UTF-8: {e}"),
    })?;
    read_config_text(text, file.path())
}

/// The tokenizer.json shipped with the weights, else the embedded CLIP tokenizer, at the
/// model's text context.
pub fn tokenizer_for(weights: &ResolvedWeights, config: &ClipConfig) -> Result<ClipTokenizer> {
    let context = config.text_config.max_position_embeddings;
    match &weights.tokenizer {
        Some(StoredFile::Disk(p)) => ClipTokenizer::from_file(p, context),
        Some(StoredFile::Embedded(f)) => ClipTokenizer::from_bytes(f.bytes, context),
        None => ClipTokenizer::embedded(context),
    }
}
