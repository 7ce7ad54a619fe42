//! The RVPT objective: cross-entropy over temperature-scaled cosine similarities to the class
//! text features, plus lambda times the feature-repelling loss FR, which pulls the prompted
//! feature away from the frozen encoder's feature for the same image (towards cosine -1).

use crate::error::{Error, Result};
use crate::model::ops::{cosine_rows, l2_normalize};
use crate::model::Clip;
use candle_core::{DType, Tensor};

/// How FR measures closeness to the frozen feature.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Repulsion {
    /// mean cosine (the seed's definition), minimised towards -1.
    #[default]
    Cosine,
    /// minus the mean L1 distance between the unit-normalised features (ablation).
    L1,
    /// minus the mean L2 distance between the unit-normalised features (ablation).
    L2,
}

impl std::str::FromStr for Repulsion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cosine" => Ok(Self::Cosine),
            "l1" => Ok(Self::L1),
            "l2" => Ok(Self::L2),
            _ => Err(Error::Invalid(format!(
                "unknown FR `{s}`: cosine, l1 or l2"
            ))),
        }
    }
}

/// Where FR compares the prompted encoder with the frozen one. Parsed from `final`, `prompted`,
/// a block range `a..b` / `a..=b` or a list `6,8,10`; written back the same way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RepelAt {
    /// The final pooled feature (the paper's definition).
    #[default]
    Final,
    /// The [CLS] token after every prompted block (the paper's later, layer-wise version).
    PromptedBlocks,
    /// The [CLS] token after each of these blocks, independent of where the prompts are (the
    /// paper's Split / Overlap / Intertwine / Mix ablations).
    Blocks(Vec<usize>),
}

impl RepelAt {
    /// The blocks whose [CLS] tokens are repelled, ascending (`None`: the pooled feature), checked against
    /// the prompted blocks: FR above no prompt cannot move, so it is refused.
    pub fn resolve(
        &self,
        prompted: std::ops::Range<usize>,
        num_blocks: usize,
    ) -> Result<Option<Vec<usize>>> {
        match self {
            Self::Final => Ok(None),
            Self::PromptedBlocks => Ok(Some(prompted.collect())),
            Self::Blocks(blocks) => {
                for &b in blocks {
                    if b >= num_blocks || b < prompted.start {
                        return Err(Error::setting(
                            crate::Setting::RepelBlocks,
                            self,
                            format!(
                                "block {b} is outside blocks {}..{num_blocks}, the ones at or \
                                 after the first prompted block, where the prompts can move the \
                                 [CLS] token",
                                prompted.start
                            ),
                        ));
                    }
                }
                let mut blocks = blocks.clone();
                blocks.sort_unstable();
                blocks.dedup();
                Ok(Some(blocks))
            }
        }
    }
}

impl std::fmt::Display for RepelAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Final => write!(f, "final"),
            Self::PromptedBlocks => write!(f, "prompted"),
            Self::Blocks(b) => {
                let list: Vec<String> = b.iter().map(|i| i.to_string()).collect();
                write!(f, "{}", list.join(","))
            }
        }
    }
}

impl std::str::FromStr for RepelAt {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::setting(
                crate::Setting::RepelBlocks,
                format!("`{s}`"),
                "expected final, prompted, a range a..b / a..=b or a list like 6,8,10",
            )
        };
        match s.trim() {
            "final" => return Ok(Self::Final),
            "prompted" => return Ok(Self::PromptedBlocks),
            _ => {}
        }
        let mut blocks: Vec<usize> = match super::prompts::parse_block_range(s) {
            Some(r) => r?.collect(),
            None => s
                .split(',')
                .map(|t| t.trim().parse().map_err(|_| bad()))
                .collect::<Result<_>>()?,
        };
        blocks.sort_unstable();
        blocks.dedup();
        if blocks.is_empty() {
            return Err(bad());
        }
        Ok(Self::Blocks(blocks))
    }
}

super::serde_as_string!(RepelAt);

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossConfig {
    /// Weight of FR; 0 is plain VPT.
    pub lambda: f64,
    pub repulsion: Repulsion,
    /// Where FR compares the two encoders.
    pub repel: RepelAt,
    /// Margin variant: each sample's term is max(FR_i, margin), so repulsion stops at the margin.
    pub margin: Option<f64>,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            lambda: 2.0,
            repulsion: Repulsion::Cosine,
            repel: RepelAt::Final,
            margin: None,
        }
    }
}

/// Per-sample FR terms (N,) between matching rows.
fn repulsion_terms(prompted: &Tensor, frozen: &Tensor, kind: Repulsion) -> Result<Tensor> {
    let p = prompted.to_dtype(DType::F32)?;
    let f = frozen.to_dtype(DType::F32)?;
    Ok(match kind {
        Repulsion::Cosine => cosine_rows(&p, &f)?,
        Repulsion::L1 => (l2_normalize(&p)? - l2_normalize(&f)?)?
            .abs()?
            .sum(1)?
            .neg()?,
        Repulsion::L2 => (l2_normalize(&p)? - l2_normalize(&f)?)?
            .sqr()?
            .sum(1)?
            .sqrt()?
            .neg()?,
    })
}

/// FR over a batch: mean of the per-sample terms (after the margin, if any).
pub fn feature_repulsion(prompted: &Tensor, frozen: &Tensor, cfg: &LossConfig) -> Result<Tensor> {
    let terms = repulsion_terms(prompted, frozen, cfg.repulsion)?;
    let terms = match cfg.margin {
        Some(m) => terms.maximum(m)?,
        None => terms,
    };
    Ok(terms.mean_all()?)
}

/// Cross-entropy of logit_scale * cos(projected feature, class text) against `labels`.
pub fn classification_loss(
    model: &Clip,
    features: &Tensor,
    text: &Tensor,
    labels: &Tensor,
) -> Result<Tensor> {
    let embeds = l2_normalize(&model.project_image(features)?)?.to_dtype(DType::F32)?;
    let scale = model.logit_scale()?.to_dtype(DType::F32)?.detach();
    let logits = embeds
        .matmul(&text.to_dtype(DType::F32)?.t()?)?
        .broadcast_mul(&scale)?;
    Ok(candle_nn::loss::cross_entropy(&logits, labels)?)
}

/// The loss and its parts (for logs). The parts are detached f32 scalars left on the device:
/// reading them is a host synchronisation, which a training step should not make.
pub struct LossParts {
    pub total: Tensor,
    pub ce: Tensor,
    pub fr: Tensor,
}

impl LossParts {
    /// (total, CE, FR) as a detached f32 tensor of shape (3,), on the device.
    pub fn stacked(&self) -> Result<Tensor> {
        let parts = [&self.total, &self.ce, &self.fr]
            .into_iter()
            .map(|t| t.detach().to_dtype(DType::F32))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::stack(&parts, 0)?)
    }

    /// (total, CE, FR) read back in one transfer.
    pub fn values(&self) -> Result<[f32; 3]> {
        let v = self.stacked()?.to_vec1::<f32>()?;
        Ok([v[0], v[1], v[2]])
    }
}

/// CE + lambda * FR. `prompted`/`frozen` are the pooled features (B, W), or when FR is on blocks
/// the [CLS] tokens of the repelled blocks concatenated along the batch ((blocks * B, W) each).
pub fn rvpt_loss(
    model: &Clip,
    text: &Tensor,
    labels: &Tensor,
    pooled: &Tensor,
    prompted: &Tensor,
    frozen: &Tensor,
    cfg: &LossConfig,
) -> Result<LossParts> {
    let ce = classification_loss(model, pooled, text, labels)?;
    let fr = feature_repulsion(prompted, frozen, cfg)?;
    let total = if cfg.lambda == 0.0 {
        ce.clone()
    } else {
        (&ce + (&fr * cfg.lambda)?)?
    };
    Ok(LossParts {
        ce: ce.detach(),
        fr: fr.detach(),
        total,
    })
}
