//! The image tower (HF `CLIPVisionTransformer`), opened up block by block.
//!
//! `embed` → `encoder.layers[i].forward` … → `pool` is the path every image takes; callers that
//! add prompt tokens run the blocks themselves, with [CLS] + patches + extra tokens as the
//! sequence.

use super::config::VisionConfig;
use super::transformer::{BlockConfig, Encoder, LayerNorm, Linear};
use candle_core::{IndexOp, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct VisionTransformer {
    /// Conv weight (width, channels, patch, patch) flattened to (width, channels*patch*patch).
    patch_weight: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layernorm: LayerNorm,
    pub encoder: Encoder,
    post_layernorm: LayerNorm,
    cfg: VisionConfig,
}

impl VisionTransformer {
    pub fn new(vb: VarBuilder, cfg: &VisionConfig) -> Result<Self> {
        let (w, c, p) = (cfg.hidden_size, cfg.num_channels, cfg.patch_size);
        let emb = vb.pp("embeddings");
        let patch_weight = emb
            .get((w, c, p, p), "patch_embedding.weight")?
            .reshape((w, c * p * p))?;
        let class_embedding = emb.get(w, "class_embedding")?;
        let position_embedding = emb.get((cfg.num_positions(), w), "position_embedding.weight")?;
        let block_cfg = BlockConfig {
            width: w,
            intermediate: cfg.intermediate_size,
            num_heads: cfg.num_attention_heads,
            activation: cfg.hidden_act,
            eps: cfg.layer_norm_eps,
        };
        let encoder = Encoder::new(vb.pp("encoder"), &block_cfg, cfg.num_hidden_layers)?;
        Ok(Self {
            patch_weight,
            class_embedding,
            position_embedding,
            // "pre_layrnorm" is transformers' own spelling.
            pre_layernorm: LayerNorm::new(vb.pp("pre_layrnorm"), w, cfg.layer_norm_eps)?,
            encoder,
            post_layernorm: LayerNorm::new(vb.pp("post_layernorm"), w, cfg.layer_norm_eps)?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// The final layer norm, applied to [CLS] by [`Self::pool`].
    pub fn post_layernorm(&self) -> &LayerNorm {
        &self.post_layernorm
    }

    /// An image tower made of two: the stem (patch and position embeddings, pre-norm) and blocks
    /// `< k` of `lower`, blocks `>= k` and the final norm of `upper`. Both must have one shape.
    pub fn spliced(lower: &Self, upper: &Self, k: usize) -> Result<Self> {
        if lower.cfg != upper.cfg {
            candle_core::bail!("cannot splice image towers of different configs");
        }
        let n = upper.encoder.layers.len();
        if k > n {
            candle_core::bail!("cannot splice at block {k} of {n}");
        }
        let mut out = upper.clone();
        out.patch_weight = lower.patch_weight.clone();
        out.class_embedding = lower.class_embedding.clone();
        out.position_embedding = lower.position_embedding.clone();
        out.pre_layernorm = lower.pre_layernorm.clone();
        out.encoder.layers[..k].clone_from_slice(&lower.encoder.layers[..k]);
        Ok(out)
    }

    /// Normalised pixels (B, C, H, W) → tokens (B, 1 + patches, width) entering block 0:
    /// patch embedding (a strided conv, computed as unfold + matmul), [CLS], positions, pre-norm.
    pub fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixels.dims4()?;
        let p = self.cfg.patch_size;
        let (gh, gw) = (h / p, w / p);
        if h != self.cfg.image_size || w != self.cfg.image_size || c != self.cfg.num_channels {
            candle_core::bail!(
                "pixels have shape {:?}, the vision tower expects (B, {}, {}, {})",
                pixels.dims(),
                self.cfg.num_channels,
                self.cfg.image_size,
                self.cfg.image_size
            );
        }
        let patches = pixels
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b * gh * gw, c * p * p))?;
        let width = self.cfg.hidden_size;
        // A linear layer without bias: frozen weights skip their gradient in backward.
        let patches = Linear::from_parts(self.patch_weight.clone(), None)
            .forward(&patches)?
            .reshape((b, gh * gw, width))?;
        let cls = self
            .class_embedding
            .reshape((1, 1, width))?
            .broadcast_as((b, 1, width))?;
        let tokens = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.position_embedding)?;
        self.pre_layernorm.forward(&tokens)
    }

    /// Runs blocks `range` on a token sequence of any length.
    pub fn forward_blocks(&self, x: &Tensor, range: std::ops::Range<usize>) -> Result<Tensor> {
        self.encoder.forward_range(x, None, range)
    }

    /// Runs blocks `range` as [`Self::forward_blocks`], the last one for the [CLS] token only
    /// ([`EncoderLayer::forward_head`](super::transformer::EncoderLayer::forward_head)):
    /// (B, 1, width), all that [`Self::pool`] reads.
    pub fn forward_blocks_cls(&self, x: &Tensor, range: std::ops::Range<usize>) -> Result<Tensor> {
        if range.is_empty() {
            return x.narrow(1, 0, 1);
        }
        let last = range.end - 1;
        let x = self.forward_blocks(x, range.start..last)?;
        self.encoder.layers[last].forward_head(&x, None, 1)
    }

    /// Final layer norm of the [CLS] token: the pooled image feature (pre-projection).
    pub fn pool(&self, tokens: &Tensor) -> Result<Tensor> {
        self.post_layernorm.forward(&tokens.i((.., 0, ..))?)
    }

    /// Pixels → pooled feature (B, width).
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let x = self.embed(pixels)?;
        let x = self.forward_blocks_cls(&x, 0..self.encoder.layers.len())?;
        self.pool(&x)
    }

    /// The input of block 0 and the output of every block (as transformers' `hidden_states`).
    pub fn hidden_states(&self, pixels: &Tensor) -> Result<Vec<Tensor>> {
        self.encoder.hidden_states(&self.embed(pixels)?, None)
    }
}
