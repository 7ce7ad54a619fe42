//! `torch.optim.SGD`: momentum, dampening, weight decay, Nesterov.

use super::{check_range, check_vars, grad_f32, param_f32, write_back, Optimizer};
use crate::error::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// SGD hyper-parameters; the defaults are torch's (`lr` 1e-3, everything else off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

/// SGD with torch's update, per parameter `p` with gradient `g` (buffers in f32):
///
/// ```text
/// g = g + weight_decay * p                        if weight_decay != 0
/// b = g  (first step)  |  b = momentum * b + (1 - dampening) * g
/// g = g + momentum * b (nesterov)  |  g = b       if momentum != 0
/// p = p - lr * g
/// ```
#[derive(Debug)]
pub struct Sgd {
    vars: Vec<Var>,
    buffers: Vec<Option<Tensor>>,
    /// f32 master copies of the parameters that are not f32 (see the module's documentation).
    masters: Vec<Option<Tensor>>,
    config: SgdConfig,
}

impl Sgd {
    /// Validates the hyper-parameters as torch does (no negative values; Nesterov needs momentum
    /// and zero dampening) and refuses non-float or repeated parameters.
    pub fn new(vars: Vec<Var>, config: SgdConfig) -> Result<Self> {
        check_range("lr", config.lr, 0.0, f64::MAX)?;
        check_range("momentum", config.momentum, 0.0, f64::MAX)?;
        check_range("dampening", config.dampening, f64::MIN, f64::MAX)?;
        check_range("weight_decay", config.weight_decay, 0.0, f64::MAX)?;
        if config.nesterov && (config.momentum <= 0.0 || config.dampening != 0.0) {
            return Err(Error::Invalid(
                "Nesterov momentum requires momentum > 0 and dampening = 0".into(),
            ));
        }
        check_vars(&vars)?;
        let buffers = vec![None; vars.len()];
        let masters = vec![None; vars.len()];
        Ok(Self {
            vars,
            buffers,
            masters,
            config,
        })
    }

    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Restores a momentum buffer (f32, the param's shape), e.g. when resuming from a checkpoint.
    pub fn set_momentum_buffer(&mut self, var: &Var, buffer: Tensor) -> Result<()> {
        let i = self
            .vars
            .iter()
            .position(|v| v.id() == var.id())
            .ok_or_else(|| {
                Error::Invalid("momentum buffer for a parameter this SGD does not train".into())
            })?;
        if buffer.dims() != var.dims() {
            return Err(Error::Invalid(format!(
                "momentum buffer of shape {:?} for a parameter of shape {:?}",
                buffer.dims(),
                var.dims()
            )));
        }
        self.buffers[i] = Some(buffer.to_dtype(candle_core::DType::F32)?);
        Ok(())
    }

    /// The f32 momentum buffer of `var`; `None` before its first step with a gradient, without
    /// momentum, or for a parameter this optimizer does not hold.
    pub fn momentum_buffer(&self, var: &Var) -> Option<&Tensor> {
        let i = self.vars.iter().position(|v| v.id() == var.id())?;
        self.buffers[i].as_ref()
    }

    /// The f32 master copy of a half-precision `var`; `None` for an f32 parameter (it is its own
    /// master), before its first update, or for a parameter this optimizer does not hold.
    pub fn master(&self, var: &Var) -> Option<&Tensor> {
        let i = self.vars.iter().position(|v| v.id() == var.id())?;
        self.masters[i].as_ref()
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = self.config;
        let slots = self.buffers.iter_mut().zip(self.masters.iter_mut());
        for (var, (buffer, master)) in self.vars.iter().zip(slots) {
            let Some(mut g) = grad_f32(var, grads)? else {
                continue;
            };
            let p = param_f32(var, master)?;
            if c.weight_decay != 0.0 {
                g = (g + p.affine(c.weight_decay, 0.0)?)?;
            }
            if c.momentum != 0.0 {
                let b = match buffer.take() {
                    None => g.clone(),
                    Some(b) => {
                        let g_part = if c.dampening != 0.0 {
                            g.affine(1.0 - c.dampening, 0.0)?
                        } else {
                            g.clone()
                        };
                        (b.affine(c.momentum, 0.0)? + g_part)?
                    }
                };
                g = if c.nesterov {
                    (g + b.affine(c.momentum, 0.0)?)?
                } else {
                    b.clone()
                };
                *buffer = Some(b);
            }
            write_back(var, master, (p + g.affine(-c.lr, 0.0)?)?)?;
        }
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }
}
