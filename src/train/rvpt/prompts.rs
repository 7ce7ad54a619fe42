//! Deep visual prompts (VPT-deep): `length` learnable tokens for each of the last `depth` blocks
//! of the image tower, initialised N(0, 0.02), without positional embedding.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

#[derive(Debug, Clone)]
pub struct DeepPrompts {
    /// One (length, width) tensor per prompted block, first prompted block first.
    pub vars: Vec<Var>,
    /// Index of the first prompted block (num_blocks - depth).
    pub first_block: usize,
}

impl DeepPrompts {
    /// Fresh prompts for the last `depth` of `num_blocks` blocks, deterministic in `seed`.
    pub fn init(
        num_blocks: usize,
        depth: usize,
        length: usize,
        width: usize,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if depth == 0 || depth > num_blocks {
            return Err(Error::Invalid(format!(
                "--prompted-blocks {depth} must be between 1 and the {num_blocks} blocks of the image tower"
            )));
        }
        if length == 0 {
            return Err(Error::Invalid("prompt length must be at least 1".into()));
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let normal = Normal::new(0f32, 0.02).map_err(|e| Error::Invalid(e.to_string()))?;
        let vars = (0..depth)
            .map(|_| {
                let data: Vec<f32> = (0..length * width)
                    .map(|_| normal.sample(&mut rng))
                    .collect();
                let t = Tensor::from_vec(data, (length, width), device)?.to_dtype(dtype)?;
                Ok(Var::from_tensor(&t)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            first_block: num_blocks - depth,
        })
    }

    pub fn depth(&self) -> usize {
        self.vars.len()
    }

    pub fn length(&self) -> usize {
        self.vars.first().map_or(0, |v| v.dims()[0])
    }

    pub fn parameter_count(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// The prompt tokens of prompted block `j` (0-based among prompted blocks), for a batch.
    pub fn tokens(&self, j: usize, batch: usize) -> Result<Tensor> {
        let p = self.vars[j].as_tensor();
        let (m, w) = p.dims2()?;
        Ok(p.unsqueeze(0)?.broadcast_as((batch, m, w))?)
    }
}
