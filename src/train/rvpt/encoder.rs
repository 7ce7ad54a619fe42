//! The prompted image encoder and its frozen twin. Both share the unprompted prefix (blocks
//! before the first prompted one); the prompted branch appends prompt tokens after [CLS] +
//! patches at every prompted block, replacing the previous block's prompt outputs (VPT-deep).
//! Blocks after the last prompted one (when the prompts do not reach the top) carry the last
//! prompt outputs along, as VPT does.

use super::prompts::DeepPrompts;
use crate::error::{Error, Result};
use crate::eval::ImageEncoder;
use crate::model::vision::VisionTransformer;
use candle_core::Tensor;

pub struct PromptedEncoder<'a> {
    pub vision: &'a VisionTransformer,
    pub prompts: &'a DeepPrompts,
}

impl<'a> PromptedEncoder<'a> {
    pub fn new(vision: &'a VisionTransformer, prompts: &'a DeepPrompts) -> Result<Self> {
        let width = vision.config().hidden_size;
        let blocks = vision.encoder.layers.len();
        let p0 = prompts
            .vars
            .first()
            .ok_or_else(|| Error::Invalid("no prompts".into()))?;
        if p0.dims()[1] != width || prompts.blocks().end > blocks {
            return Err(Error::Invalid(format!(
                "prompts of width {} for blocks {}..{} do not fit an image tower of width {width} with {blocks} blocks",
                p0.dims()[1],
                prompts.first_block,
                prompts.first_block + prompts.depth()
            )));
        }
        Ok(Self { vision, prompts })
    }

    /// Tokens after the unprompted blocks: what the frozen and prompted branches share, and what
    /// the prefix cache stores.
    pub fn prefix(&self, pixels: &Tensor) -> Result<Tensor> {
        let x = self.vision.embed(pixels)?;
        Ok(self
            .vision
            .forward_blocks(&x, 0..self.prompts.first_block)?)
    }

    /// The blocks from the first prompted one to the top on a prefix; returns the tokens after
    /// each, computed only where someone reads them. [CLS] + patches always; the prompt outputs
    /// only of the last prompted block when unprompted blocks follow (they carry them along):
    /// a prompted block's prompt outputs are otherwise replaced by the next block's prompts, so
    /// they are keys and values but never queries, and their projections and MLP are skipped
    /// (`forward_head`; at 50 + 50 tokens that is about 40% of a block's multiply-adds). The last
    /// block of the tower, whose only output anyone reads is [CLS] (pooling, layer-wise FR),
    /// computes and returns [CLS] alone: (B, 1, W).
    pub fn prompted_blocks(&self, prefix: &Tensor) -> Result<Vec<Tensor>> {
        let (b, n, _) = prefix.dims3()?;
        let mut x = prefix.clone();
        let first = self.prompts.first_block;
        let top = self.vision.encoder.layers.len();
        let mut outs = Vec::with_capacity(top - first);
        for (j, block) in self.vision.encoder.layers[first..].iter().enumerate() {
            let seq = if j < self.prompts.depth() {
                let base = x.narrow(1, 0, n)?;
                let p = self.prompts.tokens(j, b, base.dtype())?;
                Tensor::cat(&[&base, &p], 1)?
            } else {
                x
            };
            x = if first + j + 1 == top {
                block.forward_head(&seq, None, 1)?
            } else if j + 1 < self.prompts.depth() {
                block.forward_head(&seq, None, n)?
            } else {
                block.forward(&seq, None)?
            };
            outs.push(x.clone());
        }
        Ok(outs)
    }

    /// Prefix → pooled prompted feature.
    pub fn prompted_feature(&self, prefix: &Tensor) -> Result<Tensor> {
        let outs = self.prompted_blocks(prefix)?;
        let last = outs
            .last()
            .ok_or_else(|| Error::Invalid("no prompted blocks".into()))?;
        Ok(self.vision.pool(last)?)
    }

    /// Prefix → pooled feature of the original (unprompted) encoder, without gradient.
    pub fn frozen_feature(&self, prefix: &Tensor) -> Result<Tensor> {
        let x = self.vision.forward_blocks_cls(
            &prefix.detach(),
            self.prompts.first_block..self.vision.encoder.layers.len(),
        )?;
        Ok(self.vision.pool(&x)?.detach())
    }
}

impl ImageEncoder for PromptedEncoder<'_> {
    fn features(&self, pixels: &Tensor) -> Result<Tensor> {
        self.prompted_feature(&self.prefix(pixels)?)
    }

    fn cls_per_block(&self, pixels: &Tensor) -> Result<Vec<Tensor>> {
        let mut x = self.vision.embed(pixels)?;
        let mut cls = Vec::new();
        for block in &self.vision.encoder.layers[..self.prompts.first_block] {
            x = block.forward(&x, None)?;
            cls.push(x.narrow(1, 0, 1)?.squeeze(1)?);
        }
        for out in self.prompted_blocks(&x)? {
            cls.push(out.narrow(1, 0, 1)?.squeeze(1)?);
        }
        Ok(cls)
    }
}
