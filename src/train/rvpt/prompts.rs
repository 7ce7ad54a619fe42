//! Deep visual prompts (VPT-deep): `length` learnable tokens for each of a run of consecutive
//! blocks of the image tower (by default the last `depth`), initialised N(0, 0.02), without
//! positional embedding.

use crate::error::{Error, Result, Setting};
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// Which blocks get prompts: the last half (the paper's D = 6 of 12, for any depth), the last N,
/// or a range `a..b` counted from the input (the paper's placement ablations). Parsed from
/// `half`, `6`, `0..6` or `0..=5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptPlacement {
    /// The last half of the blocks (at least one): the default, which follows the model's depth.
    Half,
    Last(usize),
    Range {
        start: usize,
        end: usize,
    },
}

impl PromptPlacement {
    /// The prompted blocks of a tower of `num_blocks`, checked.
    pub fn resolve(&self, num_blocks: usize) -> Result<std::ops::Range<usize>> {
        let last = |n: usize| num_blocks.saturating_sub(n)..num_blocks;
        let (range, fits) = match *self {
            Self::Half => (last((num_blocks / 2).max(1)), num_blocks >= 1),
            Self::Last(n) => (last(n), n >= 1 && n <= num_blocks),
            Self::Range { start, end } => (start..end, start < end && end <= num_blocks),
        };
        if !fits {
            return Err(Error::setting(
                Setting::PromptBlocks,
                self,
                format!(
                    "the image tower has blocks 0..{num_blocks}; give N (the last N, 1 ≤ N ≤ \
                     {num_blocks}) or a non-empty range a..b (b ≤ {num_blocks})"
                ),
            ));
        }
        Ok(range)
    }
}

impl std::fmt::Display for PromptPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Half => write!(f, "half"),
            Self::Last(n) => write!(f, "{n}"),
            Self::Range { start, end } => write!(f, "{start}..{end}"),
        }
    }
}

/// Parses a block range `a..b` (end excluded) or `a..=b` (end included); `None` if `s` is not a
/// range. Shared by `--prompt-blocks` and `--repel-blocks`.
pub fn parse_block_range(s: &str) -> Option<Result<std::ops::Range<usize>>> {
    let (a, b, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else {
        let (a, b) = s.split_once("..")?;
        (a, b, false)
    };
    let num = |t: &str| {
        t.trim()
            .parse::<usize>()
            .map_err(|_| Error::Invalid(format!("`{s}`: `{t}` is not a block number")))
    };
    Some((|| {
        let (a, b) = (num(a)?, num(b)?);
        Ok(a..if inclusive { b + 1 } else { b })
    })())
}

super::serde_as_string!(PromptPlacement);

impl std::str::FromStr for PromptPlacement {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match parse_block_range(s) {
            Some(r) => {
                let r = r?;
                Ok(Self::Range {
                    start: r.start,
                    end: r.end,
                })
            }
            None if s.trim() == "half" => Ok(Self::Half),
            None => s.trim().parse().map(Self::Last).map_err(|_| {
                Error::setting(
                    Setting::PromptBlocks,
                    format!("`{s}`"),
                    "expected half, N (the last N blocks) or a range a..b / a..=b",
                )
            }),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeepPrompts {
    /// One (length, width) tensor per prompted block, first prompted block first.
    pub vars: Vec<Var>,
    /// Index of the first prompted block; the prompted blocks are `first_block..first_block +
    /// depth()`.
    pub first_block: usize,
}

impl DeepPrompts {
    /// Fresh prompts for `blocks` (from [`PromptPlacement::resolve`]), deterministic in `seed`.
    /// Prompts are f32 whatever the model's dtype: they are the master copy that the optimizer
    /// updates, and [`Self::tokens`] casts them to the model's dtype at use.
    pub fn init(
        blocks: std::ops::Range<usize>,
        length: usize,
        width: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let depth = blocks.len();
        if depth == 0 {
            return Err(Error::Invalid("no prompted blocks".into()));
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
                let t = Tensor::from_vec(data, (length, width), device)?;
                Ok(Var::from_tensor(&t)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            first_block: blocks.start,
        })
    }

    pub fn depth(&self) -> usize {
        self.vars.len()
    }

    /// The prompted blocks.
    pub fn blocks(&self) -> std::ops::Range<usize> {
        self.first_block..self.first_block + self.depth()
    }

    pub fn length(&self) -> usize {
        self.vars.first().map_or(0, |v| v.dims()[0])
    }

    pub fn parameter_count(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// The prompt tokens of prompted block `j` (0-based among prompted blocks), for a batch, in
    /// `dtype` (the model's). The cast is differentiable: the f32 prompts receive the gradient.
    pub fn tokens(&self, j: usize, batch: usize, dtype: DType) -> Result<Tensor> {
        let p = self.vars[j].as_tensor().to_dtype(dtype)?;
        let (m, w) = p.dims2()?;
        Ok(p.unsqueeze(0)?.broadcast_as((batch, m, w))?)
    }
}
