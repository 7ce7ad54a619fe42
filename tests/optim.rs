//! Optimizers and schedules against PyTorch trajectories recorded by
//! `tests/reference/make_optim_fixtures.py`: the same loss, differentiated by candle, must give
//! the same parameters after every one of 20 steps.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{load_tensors, max_abs_diff};
use rvpt::optim::{
    split_decay, AdamW, AdamWConfig, CosineSchedule, Optimizer, ParamGroup, Sgd, SgdConfig,
};
use std::collections::HashMap;

const STEPS: usize = 20;
const NAMES: [&str; 4] = ["W", "b", "V", "U"];
const TOL: f32 = 1e-5;

struct Fixture {
    t: HashMap<String, Tensor>,
}

impl Fixture {
    fn load() -> Self {
        Self {
            t: load_tensors("optim.safetensors"),
        }
    }

    fn get(&self, key: &str) -> &Tensor {
        self.t
            .get(key)
            .unwrap_or_else(|| panic!("fixture has no `{key}`"))
    }

    fn lrs(&self, key: &str) -> Vec<f64> {
        self.get(key).to_vec1::<f64>().unwrap()
    }

    /// Fresh parameters W, b, V, U from the recorded initial values, as `dtype`.
    fn params(&self, dtype: DType) -> Vec<Var> {
        NAMES
            .iter()
            .map(|n| {
                Var::from_tensor(&self.get(&format!("init.{n}")).to_dtype(dtype).unwrap()).unwrap()
            })
            .collect()
    }

    /// loss = sum((X @ W + b - Y)^2) + sum((tanh(V) @ C - D)^2), in f32 whatever the params' dtype.
    fn loss(&self, p: &[Var]) -> Tensor {
        let f = |v: &Var| v.as_tensor().to_dtype(DType::F32).unwrap();
        let (w, b, v) = (f(&p[0]), f(&p[1]), f(&p[2]));
        let fit = self
            .get("X")
            .matmul(&w)
            .unwrap()
            .broadcast_add(&b)
            .unwrap()
            .sub(self.get("Y"))
            .unwrap();
        let pull = v
            .tanh()
            .unwrap()
            .matmul(self.get("C"))
            .unwrap()
            .sub(self.get("D"))
            .unwrap();
        (fit.sqr().unwrap().sum_all().unwrap() + pull.sqr().unwrap().sum_all().unwrap()).unwrap()
    }
}

/// Runs 20 scheduled steps; returns the parameters after each step (as f32) and the LRs used.
fn trajectory(
    fx: &Fixture,
    params: &[Var],
    opt: &mut dyn Optimizer,
    schedule: &CosineSchedule,
) -> (Vec<Vec<Tensor>>, Vec<f64>) {
    let mut states = Vec::new();
    let mut lrs = Vec::new();
    for t in 0..STEPS {
        lrs.push(schedule.apply(opt, t));
        opt.backward_step(&fx.loss(params)).unwrap();
        // A copy: for f32 params `to_dtype` would share the storage `Var::set` overwrites.
        states.push(
            params
                .iter()
                .map(|p| p.as_tensor().to_dtype(DType::F32).unwrap().copy().unwrap())
                .collect(),
        );
    }
    (states, lrs)
}

/// Asserts every step's parameters and LR equal torch's run `run`; returns the max abs error.
fn check_run(
    fx: &Fixture,
    run: &str,
    dtype: DType,
    states: &[Vec<Tensor>],
    lrs: &[f64],
    tol: f32,
) -> f32 {
    let want_lrs = fx.lrs(&format!("{run}.lr"));
    for (t, (a, b)) in lrs.iter().zip(&want_lrs).enumerate() {
        assert!(
            (a - b).abs() <= 1e-12,
            "{run} step {t}: lr {a} vs torch {b}"
        );
    }
    let mut worst = 0f32;
    for (k, name) in NAMES.iter().enumerate() {
        let want = fx.get(&format!("{run}.{name}"));
        for (t, state) in states.iter().enumerate() {
            let err = max_abs_diff(&state[k], &want.get(t).unwrap());
            assert!(
                err <= tol,
                "{run}: {name} after step {} differs by {err}",
                t + 1
            );
            worst = worst.max(err);
        }
    }
    // A parameter without a gradient is left exactly as it was (no decay, no update).
    let u0 = fx.get("init.U").to_dtype(dtype).unwrap();
    assert_eq!(
        max_abs_diff(&states[STEPS - 1][3], &u0),
        0.0,
        "{run}: U moved"
    );
    println!("{run} ({dtype:?}): max abs error vs torch over {STEPS} steps: {worst:.3e}");
    worst
}

fn sgd_config(run: &str) -> SgdConfig {
    let base = SgdConfig {
        lr: 0.01,
        ..SgdConfig::default()
    };
    match run {
        "sgd" => SgdConfig {
            momentum: 0.9,
            weight_decay: 5e-4,
            ..base
        },
        "sgd_nesterov" => SgdConfig {
            momentum: 0.9,
            weight_decay: 5e-4,
            nesterov: true,
            ..base
        },
        "sgd_damp" => SgdConfig {
            momentum: 0.9,
            dampening: 0.5,
            ..base
        },
        "sgd_plain" => SgdConfig {
            weight_decay: 5e-4,
            ..base
        },
        _ => unreachable!(),
    }
}

fn sgd_schedule() -> CosineSchedule {
    CosineSchedule::new(0.01, 1e-4, STEPS, 0).unwrap()
}

fn adamw_schedule() -> CosineSchedule {
    CosineSchedule::new(0.05, 0.0, STEPS, 3).unwrap()
}

/// Groups as in the fixture: [W, V, U] with weight decay 0.1, [b] without.
fn adamw(params: &[Var]) -> AdamW {
    let groups = vec![
        ParamGroup::new(
            vec![params[0].clone(), params[2].clone(), params[3].clone()],
            0.1,
        ),
        ParamGroup::new(vec![params[1].clone()], 0.0),
    ];
    let config = AdamWConfig {
        lr: 0.05,
        ..AdamWConfig::default()
    };
    AdamW::new(groups, config).unwrap()
}

#[test]
fn sgd_matches_torch() {
    let fx = Fixture::load();
    for run in ["sgd", "sgd_nesterov", "sgd_damp", "sgd_plain"] {
        let params = fx.params(DType::F32);
        let mut opt = Sgd::new(params.clone(), sgd_config(run)).unwrap();
        let (states, lrs) = trajectory(&fx, &params, &mut opt, &sgd_schedule());
        check_run(&fx, run, DType::F32, &states, &lrs, TOL);
        let buffer = opt.momentum_buffer(&params[0]);
        assert_eq!(
            buffer.is_some(),
            run != "sgd_plain",
            "{run}: momentum buffer"
        );
        assert!(
            opt.momentum_buffer(&params[3]).is_none(),
            "U has no gradient, so no buffer"
        );
    }
}

#[test]
fn adamw_with_groups_matches_torch() {
    let fx = Fixture::load();
    let params = fx.params(DType::F32);
    let mut opt = adamw(&params);
    let (states, lrs) = trajectory(&fx, &params, &mut opt, &adamw_schedule());
    check_run(&fx, "adamw", DType::F32, &states, &lrs, TOL);
    let (step, m, v) = opt.state(&params[0]).unwrap();
    assert_eq!(step, STEPS as u64);
    assert_eq!((m.dtype(), v.dtype()), (DType::F32, DType::F32));
    assert!(
        opt.state(&params[3]).is_none(),
        "U has no gradient, so no state"
    );
}

/// Decay applied to the wrong group (or not decoupled) would move the trajectory: with every
/// parameter in the decayed group the result must differ from torch's two-group run.
#[test]
fn adamw_groups_change_the_result() {
    let fx = Fixture::load();
    let params = fx.params(DType::F32);
    let config = AdamWConfig {
        lr: 0.05,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::single(params.clone(), 0.1, config).unwrap();
    let (states, _) = trajectory(&fx, &params, &mut opt, &adamw_schedule());
    let want = fx.get("adamw.b").get(STEPS - 1).unwrap();
    let err = max_abs_diff(&states[STEPS - 1][1], &want);
    assert!(err > 1e-4, "decaying b too should change it, got {err}");
}

/// f16 parameters: the optimizer state stays f32 and the run stays close to the f32 one (the
/// difference is f16 rounding of the parameters, ~1e-3 relative).
#[test]
fn f16_params_keep_f32_state() {
    let fx = Fixture::load();

    let params = fx.params(DType::F16);
    let mut sgd = Sgd::new(params.clone(), sgd_config("sgd")).unwrap();
    let (states, lrs) = trajectory(&fx, &params, &mut sgd, &sgd_schedule());
    assert!(params.iter().all(|p| p.dtype() == DType::F16));
    let err = check_run(&fx, "sgd", DType::F16, &states, &lrs, 5e-3);
    assert!(err > 0.0, "sgd: f16 rounding should show");
    let buffer = sgd.momentum_buffer(&params[0]).unwrap();
    assert_eq!(buffer.dtype(), DType::F32);

    let params = fx.params(DType::F16);
    let mut adam = adamw(&params);
    let (states, lrs) = trajectory(&fx, &params, &mut adam, &adamw_schedule());
    assert!(params.iter().all(|p| p.dtype() == DType::F16));
    let err = check_run(&fx, "adamw", DType::F16, &states, &lrs, 5e-3);
    assert!(err > 0.0, "adamw: f16 rounding should show");
    let (_, m, v) = adam.state(&params[2]).unwrap();
    assert_eq!((m.dtype(), v.dtype()), (DType::F32, DType::F32));
}

/// 100 steps of 1e-4 on a bf16 parameter at 1.0, whose spacing there is 2^-8 ≈ 3.9e-3: each step
/// alone rounds back to 1.0, so without a master copy the parameter would never move.
#[test]
fn half_params_accumulate_updates_below_their_spacing() {
    let run = |opt: &mut dyn Optimizer, p: &Var| {
        for _ in 0..100 {
            // d/dp sum(p) = 1 everywhere: every step moves each element by lr (Adam: by lr too).
            let loss = p
                .as_tensor()
                .to_dtype(DType::F32)
                .unwrap()
                .sum_all()
                .unwrap();
            opt.backward_step(&loss).unwrap();
        }
    };
    let check = |p: &Var, master: Option<&Tensor>, name: &str| {
        let master = master.unwrap_or_else(|| panic!("{name}: no master copy"));
        assert_eq!(master.dtype(), DType::F32);
        let rounded = master.to_dtype(DType::BF16).unwrap();
        let m = master.to_vec1::<f32>().unwrap();
        let v = p.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        for m in &m {
            assert!((m - 0.99).abs() < 2e-5, "{name}: master {m}, expected 0.99");
        }
        // The parameter is the master rounded to bf16 (0.98828125), not 1.0.
        let r = rounded
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(v, r, "{name}");
        assert!(v.iter().all(|&v| v < 1.0), "{name}: {v:?}");
    };
    let fresh = || Var::from_tensor(&Tensor::ones(4, DType::BF16, &Device::Cpu).unwrap()).unwrap();

    let sgd_config = SgdConfig {
        lr: 1e-4,
        ..SgdConfig::default()
    };
    let p = fresh();
    let mut sgd = Sgd::new(vec![p.clone()], sgd_config).unwrap();
    run(&mut sgd, &p);
    check(&p, sgd.master(&p), "sgd");

    let p = fresh();
    let config = AdamWConfig {
        lr: 1e-4,
        ..AdamWConfig::default()
    };
    let mut adam = AdamW::single(vec![p.clone()], 0.0, config).unwrap();
    run(&mut adam, &p);
    check(&p, adam.master(&p), "adamw");

    // An f32 parameter is its own master.
    let p = Var::from_tensor(&Tensor::ones(4, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let mut sgd = Sgd::new(vec![p.clone()], sgd_config).unwrap();
    run(&mut sgd, &p);
    assert!(sgd.master(&p).is_none());
}

#[test]
fn schedules_match_torch() {
    let fx = Fixture::load();
    let cases = [
        ("sched.cos", CosineSchedule::new(0.1, 1e-3, 10, 0).unwrap()),
        ("sched.warm", CosineSchedule::new(0.1, 1e-3, 25, 5).unwrap()),
        ("sched.one", CosineSchedule::new(0.5, 0.0, 1, 0).unwrap()),
    ];
    for (key, schedule) in cases {
        let want = fx.lrs(key);
        let mut worst = 0f64;
        for (t, w) in want.iter().enumerate() {
            let err = (schedule.lr_at(t) - w).abs();
            assert!(
                err <= 1e-12,
                "{key} t={t}: {} vs torch {w}",
                schedule.lr_at(t)
            );
            worst = worst.max(err);
        }
        println!(
            "{key}: {} rates, max abs error vs torch {worst:.1e}",
            want.len()
        );
    }
}

#[test]
fn schedule_edges_and_set_lr() {
    let s = CosineSchedule::new(0.1, 1e-3, 25, 5).unwrap();
    assert_eq!(s.lr_at(4), 0.1);
    assert_eq!(s.lr_at(5), 0.1);
    assert_eq!(s.lr_at(25), 1e-3);
    assert_eq!(
        s.lr_at(1000),
        1e-3,
        "past the end the rate stays at eta_min"
    );
    assert!(CosineSchedule::new(0.1, 0.0, 5, 5).is_err());
    assert!(CosineSchedule::new(0.1, 0.0, 0, 0).is_err());
    assert!(CosineSchedule::new(f64::NAN, 0.0, 5, 0).is_err());

    let v = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let mut sgd = Sgd::new(vec![v.clone()], SgdConfig::default()).unwrap();
    assert_eq!(s.apply(&mut sgd, 0), 0.02);
    assert_eq!(sgd.lr(), 0.02);
    let mut adam = AdamW::single(vec![v], 0.0, AdamWConfig::default()).unwrap();
    adam.set_lr(0.5);
    assert_eq!(adam.lr(), 0.5);
}

#[test]
fn bad_configurations_are_refused() {
    let dev = Device::Cpu;
    let v = Var::zeros(3, DType::F32, &dev).unwrap();
    let nesterov = SgdConfig {
        nesterov: true,
        ..SgdConfig::default()
    };
    let err = Sgd::new(vec![v.clone()], nesterov).unwrap_err().to_string();
    assert!(err.contains("Nesterov"), "{err}");
    let negative = SgdConfig {
        lr: -1.0,
        ..SgdConfig::default()
    };
    assert!(Sgd::new(vec![v.clone()], negative)
        .unwrap_err()
        .to_string()
        .contains("lr"));
    let twice = Sgd::new(vec![v.clone(), v.clone()], SgdConfig::default());
    assert!(twice.unwrap_err().to_string().contains("more than once"));
    let across = AdamW::new(
        vec![
            ParamGroup::new(vec![v.clone()], 0.1),
            ParamGroup::new(vec![v.clone()], 0.0),
        ],
        AdamWConfig::default(),
    );
    assert!(across.unwrap_err().to_string().contains("more than once"));
    let beta = AdamWConfig {
        beta2: 1.0,
        ..AdamWConfig::default()
    };
    assert!(AdamW::single(vec![v], 0.0, beta)
        .unwrap_err()
        .to_string()
        .contains("beta2"));
    let ints = Var::zeros(3, DType::U32, &dev).unwrap();
    assert!(Sgd::new(vec![ints], SgdConfig::default()).is_err());
}

#[test]
fn split_decay_follows_open_clip() {
    let dev = Device::Cpu;
    let m = |r: usize, c: usize| Var::zeros((r, c), DType::F32, &dev).unwrap();
    let named = vec![
        ("visual.proj".to_string(), m(4, 4)),
        ("visual.ln_post.weight".to_string(), m(1, 4)),
        ("attn.in_proj_bias".to_string(), m(1, 4)),
        (
            "logit_scale".to_string(),
            Var::zeros((), DType::F32, &dev).unwrap(),
        ),
        ("mlp.c_fc.weight".to_string(), m(8, 4)),
        (
            "mlp.c_fc.scale".to_string(),
            Var::zeros(4, DType::F32, &dev).unwrap(),
        ),
    ];
    let [decay, keep] = split_decay(named, 0.2);
    assert_eq!((decay.vars.len(), decay.weight_decay), (2, 0.2));
    assert_eq!((keep.vars.len(), keep.weight_decay), (4, 0.0));
    assert_eq!(decay.vars[1].dims(), &[8, 4]);
}
