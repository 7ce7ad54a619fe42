//! Optimizers with PyTorch's exact update rules, and learning-rate schedules.
//!
//! candle's own SGD has neither momentum nor weight decay, and its AdamW has no parameter groups,
//! so these are written here, step for step as `torch.optim` (single-tensor path). Parameters are
//! `Var`s of any float dtype; the optimizer state (momentum buffers, Adam moments) is f32 and the
//! update is computed in f32. Keeping the state in f32 matters for f16/bf16 parameters: Adam's
//! second moment of a 1e-4 gradient (1e-8) is below f16's smallest subnormal and would flush to
//! zero. A half-precision parameter also gets an f32 master copy: the update is applied to the
//! master and the parameter receives its rounding, so steps smaller than the parameter dtype's
//! spacing accumulate instead of being rounded away (bf16 near 1 has a spacing of 2^-7: an update
//! of lr·g = 1e-4 written straight into it is lost every step). The master is the truth: a
//! parameter changed from outside the optimizer after its first step is overwritten at the next.
//!
//! A parameter with no gradient in the `GradStore` is skipped entirely (no decay, no state
//! update), as torch skips parameters whose `.grad` is `None`.

mod adamw;
mod schedule;
mod sgd;

pub use adamw::{split_decay, AdamW, AdamWConfig, ParamGroup};
pub use schedule::CosineSchedule;
pub use sgd::{Sgd, SgdConfig};

use crate::error::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, TensorId, Var};
use std::collections::HashSet;

/// What the training loops need from an optimizer.
pub trait Optimizer {
    /// Applies one update from the gradients of the last `backward`.
    fn step(&mut self, grads: &GradStore) -> Result<()>;

    /// The learning rate the next `step` will use.
    fn lr(&self) -> f64;

    /// Sets the learning rate (schedules call this before each step or epoch).
    fn set_lr(&mut self, lr: f64);

    /// `loss.backward()` then `step`.
    fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }
}

/// Refuses non-float parameters and a parameter listed twice (torch refuses both as well:
/// a duplicate would be updated twice per step).
fn check_vars<'a>(vars: impl IntoIterator<Item = &'a Var>) -> Result<()> {
    let mut seen: HashSet<TensorId> = HashSet::new();
    for (i, var) in vars.into_iter().enumerate() {
        if !var.dtype().is_float() {
            return Err(Error::Invalid(format!(
                "parameter {i} has dtype {:?}; optimizers need a float dtype",
                var.dtype()
            )));
        }
        if !seen.insert(var.id()) {
            return Err(Error::Invalid(format!(
                "parameter {i} (shape {:?}) is given to the optimizer more than once",
                var.dims()
            )));
        }
    }
    Ok(())
}

/// A hyper-parameter that must be finite and within `[lo, hi]` (NaN fails the test too).
fn check_range(name: &str, value: f64, lo: f64, hi: f64) -> Result<()> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{name} = {value} is outside [{lo}, {hi}]"
        )))
    }
}

/// The parameter's gradient as f32, or `None` when it has none.
fn grad_f32(var: &Var, grads: &GradStore) -> Result<Option<Tensor>> {
    let Some(grad) = grads.get(var.as_tensor()) else {
        return Ok(None);
    };
    if grad.dims() != var.dims() {
        return Err(Error::Invalid(format!(
            "gradient of shape {:?} for a parameter of shape {:?}",
            grad.dims(),
            var.dims()
        )));
    }
    Ok(Some(grad.detach().to_dtype(DType::F32)?))
}

/// The parameter's value as f32: its master copy when it has one, else the parameter itself,
/// detached so the update builds no autograd graph.
fn param_f32(var: &Var, master: &Option<Tensor>) -> Result<Tensor> {
    match master {
        Some(m) => Ok(m.clone()),
        None => Ok(var.as_detached_tensor().to_dtype(DType::F32)?),
    }
}

/// Writes an f32 result back: into the master copy of a parameter that is not f32 (made at its
/// first update), and into the parameter in its own dtype.
fn write_back(var: &Var, master: &mut Option<Tensor>, value: Tensor) -> Result<()> {
    var.set(&value.to_dtype(var.dtype())?)?;
    if var.dtype() != DType::F32 {
        *master = Some(value);
    }
    Ok(())
}
