//! The text tower (HF `CLIPTextTransformer`): causal transformer pooled at the end-of-text token.

use super::config::TextConfig;
use super::transformer::{BlockConfig, Encoder, LayerNorm};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct TextTransformer {
    token_embedding: Tensor,
    position_embedding: Tensor,
    pub encoder: Encoder,
    final_layer_norm: LayerNorm,
    cfg: TextConfig,
}

impl TextTransformer {
    pub fn new(vb: VarBuilder, cfg: &TextConfig) -> Result<Self> {
        let w = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        let block_cfg = BlockConfig {
            width: w,
            intermediate: cfg.intermediate_size,
            num_heads: cfg.num_attention_heads,
            activation: cfg.hidden_act,
            eps: cfg.layer_norm_eps,
        };
        let encoder = Encoder::new(vb.pp("encoder"), &block_cfg, cfg.num_hidden_layers)?;
        Ok(Self {
            token_embedding: emb.get((cfg.vocab_size, w), "token_embedding.weight")?,
            position_embedding: emb.get(
                (cfg.max_position_embeddings, w),
                "position_embedding.weight",
            )?,
            encoder,
            final_layer_norm: LayerNorm::new(vb.pp("final_layer_norm"), w, cfg.layer_norm_eps)?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    fn causal_mask(len: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let mask: Vec<f32> = (0..len)
            .flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        Tensor::from_vec(mask, (len, len), device)?.to_dtype(dtype)
    }

    /// Token embeddings + positions, the input of block 0.
    fn embed(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        if t > self.cfg.max_position_embeddings {
            candle_core::bail!(
                "{t} tokens exceed the text context of {}",
                self.cfg.max_position_embeddings
            );
        }
        let tokens = self
            .token_embedding
            .index_select(&input_ids.flatten_all()?, 0)?
            .reshape((b, t, self.cfg.hidden_size))?;
        tokens.broadcast_add(&self.position_embedding.narrow(0, 0, t)?)
    }

    /// All hidden states: block 0's input, every block's output, and the final-normed output last.
    pub fn hidden_states(&self, input_ids: &Tensor) -> Result<Vec<Tensor>> {
        let x = self.embed(input_ids)?;
        let mask = Self::causal_mask(x.dim(1)?, x.dtype(), x.device())?;
        let mut states = self.encoder.hidden_states(&x, Some(&mask))?;
        let last = self
            .final_layer_norm
            .forward(states.last().expect("non-empty"))?;
        states.push(last);
        Ok(states)
    }

    /// Where each sequence is pooled. transformers: with `eos_token_id == 2` (the hub config of
    /// the OpenAI models) the argmax of the ids, else the first `eos_token_id`.
    pub fn pool_positions(&self, input_ids: &Tensor) -> Result<Vec<usize>> {
        let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let eos = self.cfg.eos_token_id;
        Ok(ids
            .iter()
            .map(|row| {
                if eos == 2 {
                    // First position of the maximum, as torch.argmax.
                    let max = row.iter().copied().max().unwrap_or(0);
                    row.iter().position(|&x| x == max).unwrap_or(0)
                } else {
                    row.iter().position(|&x| x == eos).unwrap_or(0)
                }
            })
            .collect())
    }

    /// Token ids (B, T) → pooled text feature (B, width), pre-projection.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let x = self.embed(input_ids)?;
        let mask = Self::causal_mask(x.dim(1)?, x.dtype(), x.device())?;
        let x = self.encoder.forward(&x, Some(&mask))?;
        let x = self.final_layer_norm.forward(&x)?;
        let (b, t, w) = x.dims3()?;
        let rows: Vec<u32> = self
            .pool_positions(input_ids)?
            .into_iter()
            .enumerate()
            .map(|(i, p)| (i * t + p) as u32)
            .collect();
        let rows = Tensor::from_vec(rows, b, x.device())?;
        x.reshape((b * t, w))?.index_select(&rows, 0)
    }
}
