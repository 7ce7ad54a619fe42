//! `torch.optim.AdamW` (decoupled weight decay, bias correction, no amsgrad) with parameter
//! groups, because CLIP training keeps norms, biases and the logit scale out of weight decay.

use super::{check_range, check_vars, grad_f32, param_f32, write_back, Optimizer};
use crate::error::Result;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

/// Hyper-parameters shared by all groups; the defaults are torch's. Weight decay is per group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Parameters that share a weight decay.
#[derive(Debug, Clone)]
pub struct ParamGroup {
    pub vars: Vec<Var>,
    pub weight_decay: f64,
}

impl ParamGroup {
    pub fn new(vars: Vec<Var>, weight_decay: f64) -> Self {
        Self { vars, weight_decay }
    }
}

/// open_clip's split: a parameter is decayed unless it has fewer than 2 dimensions or its name
/// contains `bn`, `ln`, `bias` or `logit_scale`. Returns `[decayed (weight_decay), rest (0)]`.
pub fn split_decay(
    named: impl IntoIterator<Item = (String, Var)>,
    weight_decay: f64,
) -> [ParamGroup; 2] {
    let (mut decay, mut keep) = (Vec::new(), Vec::new());
    for (name, var) in named {
        let exempt = var.rank() < 2
            || ["bn", "ln", "bias", "logit_scale"]
                .iter()
                .any(|s| name.contains(s));
        if exempt {
            keep.push(var);
        } else {
            decay.push(var);
        }
    }
    [
        ParamGroup::new(decay, weight_decay),
        ParamGroup::new(keep, 0.0),
    ]
}

#[derive(Debug)]
struct State {
    step: u64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// f32 master copy of a parameter that is not f32 (see the module's documentation).
    master: Option<Tensor>,
}

/// AdamW with torch's update, per parameter `p` with gradient `g` at its step `t` (1-based,
/// counted per parameter; moments in f32):
///
/// ```text
/// p = p * (1 - lr * weight_decay)                       decoupled decay, before the moments
/// m = m + (1 - beta1) * (g - m)                          (torch's lerp)
/// v = beta2 * v + (1 - beta2) * g * g
/// p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// ```
#[derive(Debug)]
pub struct AdamW {
    groups: Vec<ParamGroup>,
    states: Vec<Vec<Option<State>>>,
    config: AdamWConfig,
}

impl AdamW {
    /// Validates as torch does (lr, eps, weight decay ≥ 0; betas in [0, 1)) and refuses
    /// non-float parameters or one that appears twice, in one group or across groups.
    pub fn new(groups: Vec<ParamGroup>, config: AdamWConfig) -> Result<Self> {
        check_range("lr", config.lr, 0.0, f64::MAX)?;
        check_range("eps", config.eps, 0.0, f64::MAX)?;
        check_range("beta1", config.beta1, 0.0, 1.0 - f64::EPSILON)?;
        check_range("beta2", config.beta2, 0.0, 1.0 - f64::EPSILON)?;
        for (i, g) in groups.iter().enumerate() {
            check_range(
                &format!("weight_decay of group {i}"),
                g.weight_decay,
                0.0,
                f64::MAX,
            )?;
        }
        check_vars(groups.iter().flat_map(|g| g.vars.iter()))?;
        let states = groups
            .iter()
            .map(|g| g.vars.iter().map(|_| None).collect())
            .collect();
        Ok(Self {
            groups,
            states,
            config,
        })
    }

    /// One group: every parameter gets `weight_decay`.
    pub fn single(vars: Vec<Var>, weight_decay: f64, config: AdamWConfig) -> Result<Self> {
        Self::new(vec![ParamGroup::new(vars, weight_decay)], config)
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// The state of `var`: `None` before its first step with a gradient or for a parameter this
    /// optimizer does not hold.
    fn state_of(&self, var: &Var) -> Option<&State> {
        self.groups
            .iter()
            .zip(&self.states)
            .flat_map(|(g, s)| g.vars.iter().zip(s))
            .find(|(v, _)| v.id() == var.id())
            .and_then(|(_, s)| s.as_ref())
    }

    /// `(steps taken, first moment, second moment)` of `var`, all f32; `None` before its first
    /// step with a gradient or for a parameter this optimizer does not hold.
    pub fn state(&self, var: &Var) -> Option<(u64, &Tensor, &Tensor)> {
        self.state_of(var)
            .map(|s| (s.step, &s.exp_avg, &s.exp_avg_sq))
    }

    /// The f32 master copy of a half-precision `var`; `None` for an f32 parameter (it is its own
    /// master), before its first update, or for a parameter this optimizer does not hold.
    pub fn master(&self, var: &Var) -> Option<&Tensor> {
        self.state_of(var).and_then(|s| s.master.as_ref())
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = self.config;
        for (group, states) in self.groups.iter().zip(self.states.iter_mut()) {
            for (var, state) in group.vars.iter().zip(states.iter_mut()) {
                let Some(g) = grad_f32(var, grads)? else {
                    continue;
                };
                let s = match state {
                    Some(s) => s,
                    None => state.insert(State {
                        step: 0,
                        exp_avg: Tensor::zeros(var.shape(), DType::F32, var.device())?,
                        exp_avg_sq: Tensor::zeros(var.shape(), DType::F32, var.device())?,
                        master: None,
                    }),
                };
                let mut p = param_f32(var, &s.master)?;
                s.step += 1;
                if group.weight_decay != 0.0 {
                    p = p.affine(1.0 - c.lr * group.weight_decay, 0.0)?;
                }
                s.exp_avg = (&s.exp_avg + (&g - &s.exp_avg)?.affine(1.0 - c.beta1, 0.0)?)?;
                s.exp_avg_sq =
                    (s.exp_avg_sq.affine(c.beta2, 0.0)? + (g.affine(1.0 - c.beta2, 0.0)? * &g)?)?;
                // Bias corrections in f64, as torch computes them on Python floats.
                let t = s.step as f64;
                let bias1 = 1.0 - c.beta1.powf(t);
                let bias2_sqrt = (1.0 - c.beta2.powf(t)).sqrt();
                let step_size = c.lr / bias1;
                let denom = s.exp_avg_sq.sqrt()?.affine(1.0 / bias2_sqrt, 0.0)?;
                let denom = (denom + c.eps)?;
                let update = (&s.exp_avg / denom)?.affine(-step_size, 0.0)?;
                write_back(var, &mut s.master, (p + update)?)?;
            }
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
