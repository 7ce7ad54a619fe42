//! Trainable CLIP parameters: fresh ones with CLIP's initialisation (seeded), or a checkpoint's
//! tensors turned into `Var`s for fine-tuning, and atomic saving back to safetensors.

use super::checkpoint::expected_tensors;
use super::clip::Clip;
use super::config::ClipConfig;
use crate::error::{Error, Result};
use crate::fsio;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;
use std::path::Path;

/// Named trainable parameters in transformers names, in a stable (sorted) order.
pub struct ClipVars {
    pub vars: Vec<(String, Var)>,
    pub config: ClipConfig,
}

/// Standard deviation transformers' `CLIPPreTrainedModel._init_weights` uses for `name`
/// (factor 1.0), or None for constants (norms: weight 1, bias 0; biases 0).
fn init_std(name: &str, cfg: &ClipConfig) -> Option<f64> {
    let (width, layers) = if name.starts_with("vision_model.") {
        let v = &cfg.vision_config;
        (v.hidden_size as f64, v.num_hidden_layers as f64)
    } else {
        let t = &cfg.text_config;
        (t.hidden_size as f64, t.num_hidden_layers as f64)
    };
    let in_std = width.powf(-0.5) * (2.0 * layers).powf(-0.5);
    if name.ends_with(".bias") || name.contains("layer_norm") || name.contains("layrnorm") {
        return None;
    }
    Some(match name {
        n if n.ends_with("class_embedding") => width.powf(-0.5),
        n if n.contains("embeddings.") => 0.02,
        n if n.contains("_proj.weight") && !n.contains("out_proj") => in_std,
        n if n.contains("out_proj.weight") => width.powf(-0.5),
        n if n.contains("fc1.weight") => (2.0 * width).powf(-0.5),
        n if n.contains("fc2.weight") => in_std,
        "visual_projection.weight" => (cfg.vision_config.hidden_size as f64).powf(-0.5),
        "text_projection.weight" => (cfg.text_config.hidden_size as f64).powf(-0.5),
        _ => 0.02,
    })
}

impl ClipVars {
    /// Fresh parameters, deterministic in `seed` (ChaCha8 + Box-Muller-free normal sampling).
    pub fn init(cfg: &ClipConfig, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut vars = Vec::new();
        let mut names = expected_tensors(cfg)?;
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, shape) in names {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name == "logit_scale" {
                vec![cfg.logit_scale_init_value as f32]
            } else {
                match init_std(&name, cfg) {
                    Some(std) => {
                        let normal = Normal::new(0.0, std as f32)
                            .map_err(|e| Error::Invalid(format!("init of {name}: {e}")))?;
                        (0..n).map(|_| normal.sample(&mut rng)).collect()
                    }
                    None if name.ends_with(".weight") => vec![1.0; n],
                    None => vec![0.0; n],
                }
            };
            let t = Tensor::from_vec(data, shape, device)?;
            vars.push((name, Var::from_tensor(&t)?));
        }
        Ok(Self {
            vars,
            config: cfg.clone(),
        })
    }

    /// A checkpoint's tensors as trainable f32 parameters (unused extra tensors are dropped).
    pub fn from_tensors(
        tensors: &HashMap<String, Tensor>,
        cfg: &ClipConfig,
        device: &Device,
    ) -> Result<Self> {
        let mut vars = Vec::new();
        let mut names = expected_tensors(cfg)?;
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, _) in names {
            let t = tensors.get(&name).ok_or_else(|| Error::MissingTensor {
                name: name.clone(),
                source_file: "(in-memory tensors)".into(),
            })?;
            let t = t.to_dtype(DType::F32)?.to_device(device)?;
            vars.push((name, Var::from_tensor(&t)?));
        }
        Ok(Self {
            vars,
            config: cfg.clone(),
        })
    }

    /// The model over these parameters: gradients of its outputs reach the `Var`s.
    pub fn model(&self) -> Result<Clip> {
        let map: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let device = self.vars[0].1.device().clone();
        let vb = VarBuilder::from_tensors(map, DType::F32, &device);
        Ok(Clip::new(vb, &self.config)?)
    }

    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn parameter_count(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Writes transformers-layout safetensors in `dtype` plus `config.json` into `dir`,
    /// each through a temporary file and a rename, so a crash never leaves half a checkpoint.
    pub fn save(&self, dir: &Path, dtype: DType) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tensors: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().to_dtype(dtype)?)))
            .collect::<Result<_>>()?;
        fsio::write_with(&dir.join("model.safetensors"), |tmp| {
            Ok(candle_core::safetensors::save(&tensors, tmp)?)
        })?;
        let json = serde_json::to_string_pretty(&self.config)
            .map_err(|e| Error::Invalid(format!("cannot serialise config: {e}")))?;
        fsio::write_atomic(&dir.join("config.json"), json.as_bytes())
    }
}
