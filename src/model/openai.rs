//! OpenAI / open_clip state-dict names → transformers names, and the config implied by the shapes.
//!
//! Backdoored CLIPs (CleanCLIP, BadCLIP, …) are published in this layout. The mapping follows the
//! module structure of OpenAI's `model.py`; fused `in_proj` attention weights are split into q, k, v.

use super::config::{Activation, ClipConfig, TextConfig, VisionConfig};
use crate::error::{Error, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// True when the names look like an OpenAI-layout state dict.
pub fn is_openai_layout(names: &HashMap<String, Tensor>) -> bool {
    names.contains_key("visual.conv1.weight")
}

/// Refuses, by name, open_clip state dicts of models rvpt does not build: their extra or
/// missing tensors would otherwise be dropped or reported as a mere shape mismatch.
pub fn refuse_unsupported(names: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let has_prefix = |p: &str| names.keys().any(|k| k.starts_with(p));
    let has_part = |p: &str| names.keys().any(|k| k.contains(p));
    let refusals: [(bool, &str, &str); 8] = [
        (
            has_prefix("visual.layer1."),
            "a ResNet image tower (`visual.layer1.*`)",
            "rvpt builds ViT image towers only",
        ),
        (
            has_prefix("visual.trunk."),
            "a timm image tower (`visual.trunk.*`)",
            "rvpt builds CLIP's own ViT only",
        ),
        (
            has_prefix("visual.attn_pool"),
            "attentional pooling (`visual.attn_pool*`)",
            "rvpt pools the image at the [CLS] token",
        ),
        (
            names.contains_key("logit_bias"),
            "a logit bias (`logit_bias`, SigLIP)",
            "rvpt builds softmax CLIP",
        ),
        (
            has_prefix("text."),
            "a custom text tower (`text.*`, open_clip's CustomTextCLIP)",
            "rvpt reads CLIP's text transformer at the top level of the state dict",
        ),
        (
            has_part(".ls_1.") || has_part(".ls_2."),
            "layer scale (`*.ls_1.gamma`)",
            "rvpt's blocks have none",
        ),
        (
            names.contains_key("text_projection.weight"),
            "a text projection with a bias (`text_projection.weight`)",
            "rvpt's text projection is one bias-free matrix",
        ),
        (
            !names.contains_key("visual.ln_pre.weight"),
            "an image tower without `visual.ln_pre` (open_clip's no_ln_pre)",
            "rvpt's image tower has the pre-transformer layer norm",
        ),
    ];
    match refusals.into_iter().find(|(hit, _, _)| *hit) {
        Some((_, feature, reason)) => Err(Error::Unsupported {
            path: path.to_path_buf(),
            feature: feature.into(),
            reason: reason.into(),
        }),
        None => Ok(()),
    }
}

fn block_index(rest: &str) -> Option<(usize, &str)> {
    let (n, tail) = rest.split_once('.')?;
    Some((n.parse().ok()?, tail))
}

/// Maps the name of one block parameter (the part after `resblocks.N.`).
fn map_block_param(tail: &str) -> Option<&'static str> {
    Some(match tail {
        "ln_1.weight" => "layer_norm1.weight",
        "ln_1.bias" => "layer_norm1.bias",
        "ln_2.weight" => "layer_norm2.weight",
        "ln_2.bias" => "layer_norm2.bias",
        "attn.out_proj.weight" => "self_attn.out_proj.weight",
        "attn.out_proj.bias" => "self_attn.out_proj.bias",
        "mlp.c_fc.weight" => "mlp.fc1.weight",
        "mlp.c_fc.bias" => "mlp.fc1.bias",
        "mlp.c_proj.weight" => "mlp.fc2.weight",
        "mlp.c_proj.bias" => "mlp.fc2.bias",
        _ => return None,
    })
}

/// Converts an OpenAI-layout state dict into transformers names. Unknown names are dropped
/// (buffers such as `attn_mask` are recomputed); `in_proj` is split into q/k/v.
pub fn to_hf_names(sd: HashMap<String, Tensor>, path: &Path) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (name, t) in sd {
        let (tower, rest) = match name.strip_prefix("visual.") {
            Some(rest) => ("vision_model", rest),
            None => ("text_model", name.as_str()),
        };
        let mapped: Option<String> = match (tower, rest) {
            ("vision_model", "conv1.weight") => {
                Some("vision_model.embeddings.patch_embedding.weight".into())
            }
            ("vision_model", "class_embedding") => {
                Some("vision_model.embeddings.class_embedding".into())
            }
            ("vision_model", "positional_embedding") => {
                Some("vision_model.embeddings.position_embedding.weight".into())
            }
            ("vision_model", "ln_pre.weight") => Some("vision_model.pre_layrnorm.weight".into()),
            ("vision_model", "ln_pre.bias") => Some("vision_model.pre_layrnorm.bias".into()),
            ("vision_model", "ln_post.weight") => Some("vision_model.post_layernorm.weight".into()),
            ("vision_model", "ln_post.bias") => Some("vision_model.post_layernorm.bias".into()),
            ("vision_model", "proj") => {
                out.insert("visual_projection.weight".into(), t.t()?.contiguous()?);
                None
            }
            ("text_model", "token_embedding.weight") => {
                Some("text_model.embeddings.token_embedding.weight".into())
            }
            ("text_model", "positional_embedding") => {
                Some("text_model.embeddings.position_embedding.weight".into())
            }
            ("text_model", "ln_final.weight") => Some("text_model.final_layer_norm.weight".into()),
            ("text_model", "ln_final.bias") => Some("text_model.final_layer_norm.bias".into()),
            ("text_model", "text_projection") => {
                out.insert("text_projection.weight".into(), t.t()?.contiguous()?);
                None
            }
            ("text_model", "logit_scale") => Some("logit_scale".into()),
            (tower, rest) => match rest
                .strip_prefix("transformer.resblocks.")
                .and_then(block_index)
            {
                Some((i, tail)) if tail.starts_with("attn.in_proj_") => {
                    let kind = tail.trim_start_matches("attn.in_proj_"); // weight | bias
                    let width = t.dim(0)? / 3;
                    for (j, proj) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                        let part = t.narrow(0, j * width, width)?.contiguous()?;
                        out.insert(
                            format!("{tower}.encoder.layers.{i}.self_attn.{proj}.{kind}"),
                            part,
                        );
                    }
                    None
                }
                Some((i, tail)) => {
                    map_block_param(tail).map(|hf| format!("{tower}.encoder.layers.{i}.{hf}"))
                }
                None => None,
            },
        };
        if let Some(mapped) = mapped {
            out.insert(mapped, t);
        }
    }
    if out.is_empty() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: "no OpenAI CLIP tensors found".into(),
        });
    }
    Ok(out)
}

fn count_blocks(sd: &HashMap<String, Tensor>, prefix: &str) -> usize {
    sd.keys()
        .filter_map(|k| {
            k.strip_prefix(prefix)
                .and_then(block_index)
                .map(|(i, _)| i + 1)
        })
        .max()
        .unwrap_or(0)
}

/// The config an OpenAI-layout state dict implies, as OpenAI's `build_model` derives it
/// (heads = width / 64; quick_gelu; pooling at the argmax of the ids).
pub fn infer_config(sd: &HashMap<String, Tensor>, path: &Path) -> Result<ClipConfig> {
    let dims = |name: &str| -> Result<Vec<usize>> {
        sd.get(name)
            .map(|t| t.dims().to_vec())
            .ok_or_else(|| Error::MissingTensor {
                name: name.into(),
                source_file: path.to_path_buf(),
            })
    };
    let conv = dims("visual.conv1.weight")?;
    let vpos = dims("visual.positional_embedding")?;
    let tok = dims("token_embedding.weight")?;
    let tpos = dims("positional_embedding")?;
    let tproj = dims("text_projection")?;
    let (vw, patch) = (conv[0], conv[3]);
    let tw = tok[1];
    // OpenAI's heads = width / 64 is a convention, not something the tensors record: a width it
    // does not divide was built with another head count, and guessing one loads a wrong model.
    for (tower, width) in [("image", vw), ("text", tw)] {
        if width % 64 != 0 {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                reason: format!(
                    "cannot infer the {tower} tower's number of attention heads: its width \
                     {width} is not a multiple of 64 (OpenAI's rule, heads = width / 64); give \
                     the model's config.json or open_clip_config.json next to the checkpoint (a directory \
                     holding both)"
                ),
            });
        }
    }
    let grid = ((vpos[0] - 1) as f64).sqrt().round() as usize;
    let mlp = |prefix: &str, w: usize| {
        dims(&format!("{prefix}transformer.resblocks.0.mlp.c_fc.weight"))
            .map(|d| d[0])
            .unwrap_or(4 * w)
    };
    Ok(ClipConfig {
        projection_dim: tproj[1],
        logit_scale_init_value: 2.6592,
        vision_config: VisionConfig {
            hidden_size: vw,
            intermediate_size: mlp("visual.", vw),
            num_attention_heads: vw / 64,
            num_hidden_layers: count_blocks(sd, "visual.transformer.resblocks."),
            image_size: grid * patch,
            patch_size: patch,
            num_channels: conv[1],
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        },
        text_config: TextConfig {
            hidden_size: tw,
            intermediate_size: mlp("", tw),
            num_attention_heads: tw / 64,
            num_hidden_layers: count_blocks(sd, "transformer.resblocks."),
            max_position_embeddings: tpos[0],
            vocab_size: tok[0],
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 2,
        },
        preprocess: Default::default(),
    })
}
