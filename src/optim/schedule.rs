//! Cosine annealing with an optional linear warm-up.

use super::{check_range, Optimizer};
use crate::error::{Error, Result};

/// The learning rate at step (or epoch) `t`, for `t` counted from 0:
///
/// ```text
/// t <  warmup:  base_lr * (t + 1) / warmup
/// t >= warmup:  eta_min + (base_lr - eta_min) * (1 + cos(pi * u / T)) / 2,
///               u = min(t - warmup, T),  T = total - warmup
/// ```
///
/// With `warmup = 0` this is the closed form of `torch.optim.lr_scheduler.CosineAnnealingLR`
/// with `T_max = total`; with a warm-up it equals torch's
/// `SequentialLR([LambdaLR(lambda t: (t + 1) / warmup), CosineAnnealingLR(T_max = total - warmup)],
/// milestones = [warmup])` and open_clip's `cosine_lr` (for `eta_min = 0`). The warm-up ends on
/// `base_lr` at `t = warmup - 1` and the cosine starts from `base_lr` at `t = warmup`. Past `total`
/// the rate stays at `eta_min` (torch's would climb back up the cosine).
///
/// Whether `t` counts optimizer steps or epochs is the caller's choice: give `total` and `warmup`
/// in the same unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineSchedule {
    base_lr: f64,
    eta_min: f64,
    total: usize,
    warmup: usize,
}

impl CosineSchedule {
    /// `total` ≥ 1 steps in all, the first `warmup` (< `total`) of them warming up.
    pub fn new(base_lr: f64, eta_min: f64, total: usize, warmup: usize) -> Result<Self> {
        check_range("base_lr", base_lr, 0.0, f64::MAX)?;
        check_range("eta_min", eta_min, 0.0, f64::MAX)?;
        if warmup >= total {
            return Err(Error::Invalid(format!(
                "cosine schedule: warmup ({warmup}) must be shorter than the total ({total}) steps"
            )));
        }
        Ok(Self {
            base_lr,
            eta_min,
            total,
            warmup,
        })
    }

    pub fn base_lr(&self) -> f64 {
        self.base_lr
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn warmup(&self) -> usize {
        self.warmup
    }

    pub fn lr_at(&self, t: usize) -> f64 {
        if t < self.warmup {
            return self.base_lr * (t + 1) as f64 / self.warmup as f64;
        }
        let span = (self.total - self.warmup) as f64;
        let u = ((t - self.warmup) as f64).min(span);
        self.eta_min
            + (self.base_lr - self.eta_min) * (1.0 + (std::f64::consts::PI * u / span).cos()) / 2.0
    }

    /// Sets the optimizer's learning rate for step (or epoch) `t` and returns it.
    pub fn apply<O: Optimizer + ?Sized>(&self, optimizer: &mut O, t: usize) -> f64 {
        let lr = self.lr_at(t);
        optimizer.set_lr(lr);
        lr
    }
}
