//! open_clip's model config → the `ClipConfig` it describes, activation and preprocessing included.
//!
//! Read from a hub `open_clip_config.json` (`{"model_cfg": …, "preprocess_cfg": …}`) or a bare
//! model config such as open_clip's `model_configs/ViT-B-32.json`. Missing keys take open_clip's
//! defaults (`CLIPVisionCfg`, `CLIPTextCfg`: `quick_gelu` absent means GELU, as open_clip's
//! `ViT-B-32`). Keys that only matter to training, or only to a feature left off, are accepted;
//! anything that would build another model is refused by name (`Error::Unsupported`).

use super::config::{Activation, ClipConfig, Preprocess, TextConfig, VisionConfig};
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// True when `json` is an open_clip config (hub file or bare model config).
pub fn is_open_clip_config(json: &Value) -> bool {
    json.get("model_cfg").is_some() || json.get("vision_cfg").is_some()
}

/// The model an open_clip config describes, checked as a transformers config is.
pub fn from_json(json: &Value, path: &Path) -> Result<ClipConfig> {
    let r = Reader { path };
    let model = match json.get("model_cfg") {
        Some(m) => r.object(m, "model_cfg")?,
        None => r.object(json, "model config")?,
    };
    let cfg = r.model(model)?;
    let cfg = ClipConfig {
        preprocess: match json.get("preprocess_cfg") {
            Some(p) => r.preprocess(r.object(p, "preprocess_cfg")?, &cfg)?,
            None => Preprocess::default(),
        },
        ..cfg
    };
    cfg.validate(path)?;
    Ok(cfg)
}

/// Reads one file's keys, naming the file and the key in every refusal.
struct Reader<'a> {
    path: &'a Path,
}

/// What a key may hold to be accepted: the value of open_clip's that builds the model rvpt builds.
enum Accept {
    /// Only a falsy value (false, null, 0, "", {}, []): the feature is off.
    Off,
    /// Only null (open_clip's default): any value, 0 included, turns the feature on.
    Null,
    /// Only this string (or null, open_clip's default).
    Str(&'static str),
}

impl Reader<'_> {
    fn config_error(&self, reason: String) -> Error {
        Error::Config {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn unsupported(&self, feature: String, reason: &str) -> Error {
        Error::Unsupported {
            path: self.path.to_path_buf(),
            feature,
            reason: reason.into(),
        }
    }

    fn object<'v>(&self, v: &'v Value, what: &str) -> Result<&'v Map<String, Value>> {
        v.as_object()
            .ok_or_else(|| self.config_error(format!("{what} is not a JSON object")))
    }

    fn usize(&self, v: &Value, key: &str) -> Result<usize> {
        v.as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| self.config_error(format!("{key} = {v}: expected a whole number")))
    }

    fn f64(&self, v: &Value, key: &str) -> Result<f64> {
        v.as_f64()
            .ok_or_else(|| self.config_error(format!("{key} = {v}: expected a number")))
    }

    /// An image or patch size: a number, or [h, w] with h == w (rvpt's towers are square).
    fn square(&self, v: &Value, key: &str) -> Result<usize> {
        match v.as_array() {
            Some(hw) if hw.len() == 2 => {
                let (h, w) = (self.usize(&hw[0], key)?, self.usize(&hw[1], key)?);
                if h != w {
                    return Err(self.unsupported(
                        format!("{key} = {v}"),
                        "rvpt's image tower takes square images and patches",
                    ));
                }
                Ok(h)
            }
            _ => self.usize(v, key),
        }
    }

    fn is_off(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
        }
    }

    /// Refuses `key = v` unless `accept` allows it; `why` says what rvpt does not build.
    fn check(&self, key: &str, v: &Value, accept: Accept, why: &str) -> Result<()> {
        let ok = match accept {
            Accept::Off => Self::is_off(v),
            Accept::Null => v.is_null(),
            Accept::Str(want) => v.is_null() || v.as_str() == Some(want),
        };
        if ok {
            Ok(())
        } else {
            Err(self.unsupported(format!("{key} = {v}"), why))
        }
    }

    /// `norm_kwargs`: only `eps` (the layer norms' epsilon) is something rvpt builds.
    fn norm_eps(&self, v: &Value, key: &str) -> Result<Option<f64>> {
        if v.is_null() {
            return Ok(None);
        }
        let obj = self.object(v, key)?;
        let mut eps = None;
        for (k, val) in obj {
            match k.as_str() {
                "eps" => eps = Some(self.f64(val, &format!("{key}.eps"))?),
                _ => {
                    return Err(self.unsupported(
                        format!("{key}.{k} = {val}"),
                        "rvpt's layer norms take only `eps`",
                    ))
                }
            }
        }
        Ok(eps)
    }

    fn model(&self, m: &Map<String, Value>) -> Result<ClipConfig> {
        let mut embed_dim = None;
        let mut quick_gelu = false;
        let mut vision = None;
        let mut text = None;
        for (k, v) in m {
            let key = format!("model_cfg.{k}");
            match k.as_str() {
                "embed_dim" => embed_dim = Some(self.usize(v, &key)?),
                "quick_gelu" => {
                    quick_gelu = v.as_bool().ok_or_else(|| {
                        self.config_error(format!("{key} = {v}: expected true or false"))
                    })?
                }
                "vision_cfg" => vision = Some(self.object(v, &key)?),
                "text_cfg" => text = Some(self.object(v, &key)?),
                // The state dict's logit_scale wins; precision is the caller's choice.
                "init_logit_scale" | "cast_dtype" | "output_dict" => {}
                "init_logit_bias" => self.check(
                    &key,
                    v,
                    Accept::Null,
                    "a logit bias is SigLIP's (sigmoid loss); rvpt builds softmax CLIP",
                )?,
                "nonscalar_logit_scale" => {
                    self.check(&key, v, Accept::Off, "rvpt's logit scale is one number")?
                }
                "custom_text" => self.check(
                    &key,
                    v,
                    Accept::Off,
                    "CustomTextCLIP keeps the text tower under `text.`, a layout rvpt does not read",
                )?,
                "multimodal_cfg" => self.check(
                    &key,
                    v,
                    Accept::Off,
                    "CoCa's multimodal decoder is not part of rvpt's CLIP",
                )?,
                _ => {
                    return Err(self.unsupported(key, "a model_cfg key rvpt does not know"));
                }
            }
        }
        let embed_dim =
            embed_dim.ok_or_else(|| self.config_error("model_cfg has no `embed_dim`".into()))?;
        let activation = if quick_gelu {
            Activation::QuickGelu
        } else {
            Activation::Gelu
        };
        let empty = Map::new();
        Ok(ClipConfig {
            projection_dim: embed_dim,
            logit_scale_init_value: 2.6592,
            vision_config: self.vision(vision.unwrap_or(&empty), activation)?,
            text_config: self.text(text.unwrap_or(&empty), activation)?,
            preprocess: Preprocess::default(),
        })
    }

    /// `CLIPVisionCfg` → the ViT rvpt builds (heads = width / head_width,
    /// intermediate = int(width * mlp_ratio), as open_clip's `VisionTransformer`).
    fn vision(&self, m: &Map<String, Value>, activation: Activation) -> Result<VisionConfig> {
        let (mut layers, mut width, mut head_width, mut mlp_ratio) = (12, 768, 64, 4.0);
        let (mut patch, mut image, mut eps) = (16, 224, 1e-5);
        for (k, v) in m {
            let key = format!("vision_cfg.{k}");
            match k.as_str() {
                "layers" if v.is_array() => {
                    return Err(self.unsupported(
                        format!("{key} = {v} (a ResNet image tower)"),
                        "a list of stage depths is open_clip's ModifiedResNet: rvpt builds ViT \
                         image towers only",
                    ))
                }
                "layers" => layers = self.usize(v, &key)?,
                "width" => width = self.usize(v, &key)?,
                "head_width" => head_width = self.usize(v, &key)?,
                "mlp_ratio" => mlp_ratio = self.f64(v, &key)?,
                "patch_size" => patch = self.square(v, &key)?,
                "image_size" => image = self.square(v, &key)?,
                "norm_kwargs" => eps = self.norm_eps(v, &key)?.unwrap_or(eps),
                // Training-time or output-shape options; the attentional pooler's sizes matter
                // only with `attentional_pool`, timm's only with `timm_model_name`.
                "patch_dropout"
                | "output_tokens"
                | "attn_pooler_queries"
                | "attn_pooler_heads"
                | "timm_model_pretrained"
                | "timm_pool"
                | "timm_proj"
                | "timm_proj_bias"
                | "timm_drop"
                | "timm_drop_path" => {}
                "timm_model_name" => self.check(
                    &key,
                    v,
                    Accept::Null,
                    "a timm image tower has another structure than CLIP's ViT",
                )?,
                "attentional_pool" => self.check(
                    &key,
                    v,
                    Accept::Off,
                    "the attentional pooler (CoCa) replaces the [CLS] pooling rvpt builds",
                )?,
                "pool_type" => self.check(
                    &key,
                    v,
                    Accept::Str("tok"),
                    "rvpt pools the image at the [CLS] token (`tok`)",
                )?,
                "pos_embed_type" => self.check(
                    &key,
                    v,
                    Accept::Str("learnable"),
                    "rvpt's image tower has learned position embeddings",
                )?,
                "block_type" => self.check(
                    &key,
                    v,
                    Accept::Str("default"),
                    "rvpt builds CLIP's residual attention block",
                )?,
                "ls_init_value" => {
                    self.check(&key, v, Accept::Null, "layer scale is not in rvpt's blocks")?
                }
                "no_ln_pre" => self.check(
                    &key,
                    v,
                    Accept::Off,
                    "rvpt's image tower has the pre-transformer layer norm",
                )?,
                "final_ln_after_pool" => self.check(
                    &key,
                    v,
                    Accept::Off,
                    "rvpt applies the final layer norm before pooling",
                )?,
                "act_kwargs" => {
                    self.check(&key, v, Accept::Off, "rvpt's activations take no arguments")?
                }
                "qk_norm"
                | "scaled_cosine_attn"
                | "scale_heads"
                | "scale_attn_inner"
                | "scale_attn"
                | "scale_fc"
                | "input_patchnorm"
                | "global_average_pool" => self.check(
                    &key,
                    v,
                    Accept::Off,
                    "rvpt builds CLIP's plain ViT without this option",
                )?,
                _ => return Err(self.unsupported(key, "a vision_cfg key rvpt does not know")),
            }
        }
        if head_width == 0 || !width.is_multiple_of(head_width) {
            return Err(self.config_error(format!(
                "vision_cfg.width {width} is not a multiple of head_width {head_width}"
            )));
        }
        Ok(VisionConfig {
            hidden_size: width,
            // Python's int(): truncation toward zero.
            intermediate_size: (width as f64 * mlp_ratio) as usize,
            num_attention_heads: width / head_width,
            num_hidden_layers: layers,
            image_size: image,
            patch_size: patch,
            num_channels: 3,
            hidden_act: activation,
            layer_norm_eps: eps,
        })
    }

    /// `CLIPTextCfg` → the causal text transformer, pooled at the argmax of the ids.
    fn text(&self, m: &Map<String, Value>, activation: Activation) -> Result<TextConfig> {
        let (mut context, mut vocab, mut width, mut heads, mut layers) = (77, 49408, 512, 8, 12);
        let (mut mlp_ratio, mut eps) = (4.0, 1e-5);
        for (k, v) in m {
            let key = format!("text_cfg.{k}");
            match k.as_str() {
                "context_length" => context = self.usize(v, &key)?,
                "vocab_size" => vocab = self.usize(v, &key)?,
                "width" => width = self.usize(v, &key)?,
                "heads" => heads = self.usize(v, &key)?,
                "layers" => layers = self.usize(v, &key)?,
                "mlp_ratio" => mlp_ratio = self.f64(v, &key)?,
                "norm_kwargs" => eps = self.norm_eps(v, &key)?.unwrap_or(eps),
                // Padding after the end token never reaches the argmax-pooled position under the
                // causal mask; `eos_id` is read only by `pool_type = eos`; HF-tower options only
                // with `hf_model_name`.
                "pad_id"
                | "eos_id"
                | "output_tokens"
                | "hf_model_pretrained"
                | "hf_proj_type"
                | "hf_pooler_type" => {}
                "hf_model_name" => self.check(
                    &key,
                    v,
                    Accept::Null,
                    "a Hugging Face text tower (custom text) is not CLIP's text transformer",
                )?,
                "hf_tokenizer_name" | "tokenizer_mode" | "tokenizer_kwargs" => {
                    self.check(&key, v, Accept::Off, "rvpt tokenizes with CLIP's BPE only")?
                }
                "pool_type" => self.check(
                    &key,
                    v,
                    Accept::Str("argmax"),
                    "rvpt pools the text at the argmax of the ids (the end token)",
                )?,
                "proj_type" => self.check(
                    &key,
                    v,
                    Accept::Str("linear"),
                    "rvpt projects the text with one bias-free linear map",
                )?,
                "block_type" => self.check(
                    &key,
                    v,
                    Accept::Str("default"),
                    "rvpt builds CLIP's residual attention block",
                )?,
                "proj_bias" => {
                    self.check(&key, v, Accept::Off, "rvpt's text projection has no bias")?
                }
                "embed_cls" => self.check(
                    &key,
                    v,
                    Accept::Off,
                    "a learned text [CLS] token (CoCa) is not in rvpt's text tower",
                )?,
                "no_causal_mask" => {
                    self.check(&key, v, Accept::Off, "rvpt's text tower is causal")?
                }
                "ls_init_value" => {
                    self.check(&key, v, Accept::Null, "layer scale is not in rvpt's blocks")?
                }
                "final_ln_after_pool" => self.check(
                    &key,
                    v,
                    Accept::Off,
                    "rvpt applies the final layer norm before pooling",
                )?,
                "act_kwargs" => {
                    self.check(&key, v, Accept::Off, "rvpt's activations take no arguments")?
                }
                "qk_norm" | "scaled_cosine_attn" | "scale_heads" | "scale_attn_inner"
                | "scale_attn" | "scale_fc" => self.check(
                    &key,
                    v,
                    Accept::Off,
                    "rvpt builds CLIP's plain text transformer without this option",
                )?,
                _ => return Err(self.unsupported(key, "a text_cfg key rvpt does not know")),
            }
        }
        Ok(TextConfig {
            hidden_size: width,
            intermediate_size: (width as f64 * mlp_ratio) as usize,
            num_attention_heads: heads,
            num_hidden_layers: layers,
            max_position_embeddings: context,
            vocab_size: vocab,
            hidden_act: activation,
            layer_norm_eps: eps,
            // transformers' rule for pooling at the argmax of the ids, as open_clip's `argmax`.
            eos_token_id: 2,
        })
    }

    /// `preprocess_cfg` → mean and std; the resize open_clip describes must be the one rvpt does
    /// (shortest edge to the image size, bicubic, centre crop).
    fn preprocess(&self, m: &Map<String, Value>, cfg: &ClipConfig) -> Result<Preprocess> {
        let mut p = Preprocess::default();
        let triple = |v: &Value, key: &str| -> Result<[f32; 3]> {
            // open_clip repeats a single number over the channels.
            if let Some(x) = v.as_f64() {
                return Ok([x as f32; 3]);
            }
            match v.as_array() {
                Some(a) if a.len() == 3 => {
                    let mut out = [0f32; 3];
                    for (o, x) in out.iter_mut().zip(a) {
                        *o = self.f64(x, key)? as f32;
                    }
                    Ok(out)
                }
                _ => Err(self.config_error(format!("{key} = {v}: expected 3 numbers"))),
            }
        };
        for (k, v) in m {
            let key = format!("preprocess_cfg.{k}");
            match k.as_str() {
                "mean" => p.mean = triple(v, &key)?,
                "std" => p.std = triple(v, &key)?,
                "interpolation" => self.check(
                    &key,
                    v,
                    Accept::Str("bicubic"),
                    "rvpt resizes with PIL's bicubic filter only",
                )?,
                "resize_mode" => self.check(
                    &key,
                    v,
                    Accept::Str("shortest"),
                    "rvpt resizes the shortest edge to the image size, then centre-crops",
                )?,
                "mode" => self.check(&key, v, Accept::Str("RGB"), "rvpt feeds RGB images")?,
                "size" => {
                    let size = self.square(v, &key)?;
                    let image = cfg.vision_config.image_size;
                    if size != image {
                        return Err(self.unsupported(
                            format!("{key} = {v}"),
                            &format!("rvpt resizes to the image tower's size, {image}"),
                        ));
                    }
                }
                // Padding colour of `resize_mode = longest`, refused above; open_clip ignores
                // keys it does not know, and so does this reader.
                _ => {}
            }
        }
        Ok(p)
    }
}
