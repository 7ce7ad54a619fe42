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

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossConfig {
    /// Weight of FR; 0 is plain VPT.
    pub lambda: f64,
    pub repulsion: Repulsion,
    /// FR on the [CLS] token at every prompted block (the paper's later version) instead of the
    /// final pooled feature.
    pub layerwise: bool,
    /// Margin variant: each sample's term is max(FR_i, margin), so repulsion stops at the margin.
    pub margin: Option<f64>,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            lambda: 2.0,
            repulsion: Repulsion::Cosine,
            layerwise: false,
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

/// The loss and its parts (for logs).
pub struct LossParts {
    pub total: Tensor,
    pub ce: f32,
    pub fr: f32,
}

/// CE + lambda * FR. `prompted`/`frozen` are the pooled features (B, W), or with `layerwise` the
/// per-prompted-block [CLS] tokens concatenated along the batch ((depth * B, W) each).
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
        ce: ce.to_scalar()?,
        fr: fr.to_scalar()?,
        total,
    })
}
