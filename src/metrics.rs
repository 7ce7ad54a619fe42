//! How results are judged: clean accuracy (CA), attack success rate (ASR) and perturbation
//! resistivity (PR), each with its sample count; rates carry a 95% Wilson interval.

use crate::error::{Error, Result};
use crate::model::ops::cosine_rows;
use candle_core::{DType, Tensor};
use serde::Serialize;

/// A proportion with its sample count and 95% Wilson score interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Rate {
    pub hits: usize,
    pub total: usize,
    pub value: f64,
    pub ci95: (f64, f64),
}

impl Rate {
    pub fn new(hits: usize, total: usize) -> Self {
        let value = if total == 0 {
            f64::NAN
        } else {
            hits as f64 / total as f64
        };
        Self {
            hits,
            total,
            value,
            ci95: wilson_interval(hits, total, 1.96),
        }
    }

    /// "93.4% [91.2, 95.1] (n=1000)".
    pub fn display_percent(&self) -> String {
        format!(
            "{:.1}% [{:.1}, {:.1}] (n={})",
            100.0 * self.value,
            100.0 * self.ci95.0,
            100.0 * self.ci95.1,
            self.total
        )
    }
}

/// Wilson score interval for `hits` successes in `n` trials; (NaN, NaN) when n = 0.
pub fn wilson_interval(hits: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let n = n as f64;
    let p = hits as f64 / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Clean accuracy: share of predictions equal to the labels.
pub fn clean_accuracy(predictions: &[usize], labels: &[usize]) -> Result<Rate> {
    if predictions.len() != labels.len() {
        return Err(Error::Invalid(format!(
            "{} predictions for {} labels",
            predictions.len(),
            labels.len()
        )));
    }
    let hits = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    Ok(Rate::new(hits, labels.len()))
}

/// Which triggered images count towards ASR (papers disagree; reports say which was used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AsrConvention {
    /// Images whose true class is the target are left out (BackdoorBench, CleanCLIP).
    #[default]
    ExcludeTarget,
    /// Every triggered image counts.
    All,
}

/// The names of `--json` (serde's kebab-case): `exclude-target`, `all`.
impl std::fmt::Display for AsrConvention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AsrConvention::ExcludeTarget => "exclude-target",
            AsrConvention::All => "all",
        })
    }
}

/// ASR: share of triggered images predicted as `target`.
pub fn attack_success_rate(
    triggered_predictions: &[usize],
    labels: &[usize],
    target: usize,
    convention: AsrConvention,
) -> Result<Rate> {
    if triggered_predictions.len() != labels.len() {
        return Err(Error::Invalid(format!(
            "{} predictions for {} labels",
            triggered_predictions.len(),
            labels.len()
        )));
    }
    let counted = triggered_predictions
        .iter()
        .zip(labels)
        .filter(|(_, &l)| convention == AsrConvention::All || l != target);
    let (mut hits, mut total) = (0, 0);
    for (&p, _) in counted {
        total += 1;
        hits += usize::from(p == target);
    }
    Ok(Rate::new(hits, total))
}

/// Index of the largest value in each row of a (N, C) tensor.
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<usize>> {
    let rows = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(rows
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 {
                        (i, v)
                    } else {
                        best
                    }
                })
                .0
        })
        .collect())
}

/// Perturbation resistivity of one perturbation, as the seed defines it:
/// PR = E[cos(feature(x), feature(x'))] / E[cos(logits(x), logits(x'))].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Resistivity {
    pub feature_cosine: f64,
    pub logit_cosine: f64,
    pub pr: f64,
    pub samples: usize,
}

/// Running sums for PR over batches.
#[derive(Debug, Clone, Default)]
pub struct ResistivityAccumulator {
    feature_sum: f64,
    logit_sum: f64,
    samples: usize,
}

impl ResistivityAccumulator {
    /// Adds a batch: features (N, D) and logits (N, C) of clean and perturbed images.
    pub fn add(
        &mut self,
        features: &Tensor,
        perturbed_features: &Tensor,
        logits: &Tensor,
        perturbed_logits: &Tensor,
    ) -> Result<()> {
        let f = cosine_rows(
            &features.to_dtype(DType::F32)?,
            &perturbed_features.to_dtype(DType::F32)?,
        )?;
        let l = cosine_rows(
            &logits.to_dtype(DType::F32)?,
            &perturbed_logits.to_dtype(DType::F32)?,
        )?;
        self.feature_sum += f.sum_all()?.to_scalar::<f32>()? as f64;
        self.logit_sum += l.sum_all()?.to_scalar::<f32>()? as f64;
        self.samples += f.dim(0)?;
        Ok(())
    }

    pub fn finish(&self) -> Resistivity {
        let n = self.samples.max(1) as f64;
        let (feature_cosine, logit_cosine) = (self.feature_sum / n, self.logit_sum / n);
        Resistivity {
            feature_cosine,
            logit_cosine,
            pr: feature_cosine / logit_cosine,
            samples: self.samples,
        }
    }
}

/// Mean cosine between the [CLS] tokens of clean and perturbed images after every block: the
/// layer-wise profile of the paper's later version. Add per batch the per-block CLS tokens (B, W).
#[derive(Debug, Clone, Default)]
pub struct LayerwiseAccumulator {
    sums: Vec<f64>,
    samples: usize,
}

impl LayerwiseAccumulator {
    pub fn add(&mut self, clean: &[Tensor], perturbed: &[Tensor]) -> Result<()> {
        if clean.len() != perturbed.len() {
            return Err(Error::Invalid("block counts differ".into()));
        }
        if self.sums.is_empty() {
            self.sums = vec![0.0; clean.len()];
        }
        if self.sums.len() != clean.len() {
            return Err(Error::Invalid("block count changed between batches".into()));
        }
        for (sum, (a, b)) in self.sums.iter_mut().zip(clean.iter().zip(perturbed)) {
            let c = cosine_rows(&a.to_dtype(DType::F32)?, &b.to_dtype(DType::F32)?)?;
            *sum += c.sum_all()?.to_scalar::<f32>()? as f64;
        }
        self.samples += clean.first().map_or(Ok(0), |t| t.dim(0))?;
        Ok(())
    }

    /// Mean cosine per block (block 0 first).
    pub fn finish(&self) -> Vec<f64> {
        let n = self.samples.max(1) as f64;
        self.sums.iter().map(|s| s / n).collect()
    }
}
