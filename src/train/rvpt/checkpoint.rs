//! One safetensors file holds a defence: the prompts, the SGD momentum (to resume), and in its
//! metadata the training config, the base weights' sha256, the seed, the epoch and the metrics.
//! Written through a temporary file and a rename, so a crash never leaves half a checkpoint.

use super::prompts::DeepPrompts;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;
use std::path::Path;

pub const FORMAT: &str = "rvpt-prompts-v1";

/// Everything but the tensors.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CheckpointMeta {
    pub format: String,
    /// The training config (`RvptConfig`) as JSON.
    pub config: serde_json::Value,
    /// sha256 of the checkpoint the prompts were trained on.
    pub base_sha256: String,
    pub seed: u64,
    /// Epochs completed.
    pub epoch: usize,
    pub first_block: usize,
    /// Per-epoch logs and any evaluation results, as JSON.
    pub metrics: serde_json::Value,
}

pub struct PromptCheckpoint {
    pub prompts: DeepPrompts,
    /// Momentum buffers, one per prompt tensor (absent in a checkpoint saved without them).
    pub momentum: Vec<Option<Tensor>>,
    pub meta: CheckpointMeta,
}

impl PromptCheckpoint {
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (j, v) in self.prompts.vars.iter().enumerate() {
            tensors.push((
                format!("prompt.{j}"),
                v.as_tensor().to_device(&Device::Cpu)?,
            ));
        }
        for (j, m) in self.momentum.iter().enumerate() {
            if let Some(m) = m {
                tensors.push((format!("momentum.{j}"), m.to_device(&Device::Cpu)?));
            }
        }
        let meta_json = serde_json::to_string(&self.meta)
            .map_err(|e| Error::Invalid(format!("cannot serialise checkpoint metadata: {e}")))?;
        let info = HashMap::from([("rvpt".to_string(), meta_json)]);
        crate::fsio::write_with(path, |tmp| {
            safetensors::tensor::serialize_to_file(tensors, Some(info), tmp).map_err(|e| {
                Error::Checkpoint {
                    path: tmp.to_path_buf(),
                    reason: e.to_string(),
                }
            })
        })
    }

    /// Reads a checkpoint; prompts are loaded as trainable f32 `Var`s on `device` (the master
    /// copy, whatever the model's dtype; a checkpoint written in a half dtype is widened).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bad = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, metadata) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta_json = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get("rvpt"))
            .ok_or_else(|| bad("no rvpt metadata: not a prompt checkpoint".into()))?;
        let meta: CheckpointMeta =
            serde_json::from_str(meta_json).map_err(|e| bad(format!("bad metadata: {e}")))?;
        if meta.format != FORMAT {
            return Err(bad(format!(
                "format `{}`, expected `{FORMAT}`",
                meta.format
            )));
        }
        let mut tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| bad(e.to_string()))?;
        let mut vars = Vec::new();
        let mut momentum = Vec::new();
        for j in 0.. {
            let Some(p) = tensors.remove(&format!("prompt.{j}")) else {
                break;
            };
            if p.rank() != 2 {
                return Err(bad(format!(
                    "prompt.{j} has shape {:?}, expected (length, width)",
                    p.dims()
                )));
            }
            vars.push(Var::from_tensor(
                &p.to_dtype(DType::F32)?.to_device(device)?,
            )?);
            momentum.push(
                tensors
                    .remove(&format!("momentum.{j}"))
                    .map(|m| m.to_dtype(DType::F32)?.to_device(device))
                    .transpose()?,
            );
        }
        if vars.is_empty() {
            return Err(bad("no prompt tensors".into()));
        }
        Ok(Self {
            prompts: DeepPrompts {
                vars,
                first_block: meta.first_block,
            },
            momentum,
            meta,
        })
    }
}
