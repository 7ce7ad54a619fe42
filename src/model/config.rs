//! CLIP configuration, read from a Hugging Face `config.json` (`CLIPConfig`) with transformers' defaults.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The MLP non-linearity (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    QuickGelu,
    Gelu,
}

/// Image tower: a ViT with a [CLS] token, pre- and post-layer norms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_attention_heads: 12,
            num_hidden_layers: 12,
            image_size: 224,
            patch_size: 32,
            num_channels: 3,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

impl VisionConfig {
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
    /// [CLS] + patches: the sequence length before any prompt tokens.
    pub fn num_positions(&self) -> usize {
        self.num_patches() + 1
    }
}

/// Text tower: a causal transformer pooled at the end-of-text token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    /// transformers' legacy rule: with `eos_token_id == 2` the text is pooled at the argmax of the ids.
    pub eos_token_id: u32,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            hidden_size: 512,
            intermediate_size: 2048,
            num_attention_heads: 8,
            num_hidden_layers: 12,
            max_position_embeddings: 77,
            vocab_size: 49408,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
        }
    }
}

/// How pixels are normalised before the image tower: `(x - mean) / std` per channel, on images
/// resized (shortest edge, bicubic) and centre-cropped as CLIP's. open_clip models may state
/// other statistics (`preprocess_cfg`); transformers' `config.json` has none, so CLIP's apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for Preprocess {
    fn default() -> Self {
        Self {
            mean: crate::image::CLIP_MEAN,
            std: crate::image::CLIP_STD,
        }
    }
}

impl Preprocess {
    /// CLIP's own statistics: what every model had before configs could say otherwise.
    pub fn is_clip(&self) -> bool {
        *self == Self::default()
    }
}

/// The whole model (`CLIPConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipConfig {
    pub projection_dim: usize,
    pub logit_scale_init_value: f64,
    pub text_config: TextConfig,
    pub vision_config: VisionConfig,
    /// Not part of transformers' `CLIPConfig`; omitted when CLIP's, so configs and digests of
    /// CLIP-normalised models are unchanged.
    #[serde(skip_serializing_if = "Preprocess::is_clip")]
    pub preprocess: Preprocess,
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self::vit_base_patch32()
    }
}

impl ClipConfig {
    /// openai/clip-vit-base-patch32, as its hub `config.json` states it.
    pub fn vit_base_patch32() -> Self {
        Self {
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
            text_config: TextConfig {
                eos_token_id: 2,
                ..TextConfig::default()
            },
            vision_config: VisionConfig::default(),
            preprocess: Preprocess::default(),
        }
    }

    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let cfg: Self = serde_json::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Checks what the model's construction assumes (also of configs built from open_clip's).
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::Config {
                path: path.to_path_buf(),
                reason,
            })
        };
        let v = &self.vision_config;
        let t = &self.text_config;
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return bad(format!(
                "vision image_size {} is not a multiple of patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        for (tower, width, heads) in [
            ("vision", v.hidden_size, v.num_attention_heads),
            ("text", t.hidden_size, t.num_attention_heads),
        ] {
            if heads == 0 || !width.is_multiple_of(heads) {
                return bad(format!(
                    "{tower} hidden_size {width} is not divisible by num_attention_heads {heads}"
                ));
            }
        }
        let p = &self.preprocess;
        if p.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || p.mean.iter().any(|m| !m.is_finite())
        {
            return bad(format!(
                "preprocessing mean {:?} / std {:?}: every std must be positive and finite",
                p.mean, p.std
            ));
        }
        Ok(())
    }
}
