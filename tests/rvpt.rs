//! RVPT against a PyTorch implementation (tests/reference/make_rvpt_fixtures.py) on the tiny
//! fixture CLIP, plus the behaviours the loop promises: every prompt gets a gradient, the
//! prefix cache changes nothing, a resumed run equals an uninterrupted one.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{fixture, load_tensors, max_abs_diff};
use rvpt::model::{load_clip, Clip, ClipConfig};
use rvpt::optim::{Optimizer, Sgd, SgdConfig};
use rvpt::train::rvpt::*;

fn tiny() -> Clip {
    let cfg = ClipConfig::from_file(&fixture("tiny/config.json")).unwrap();
    load_clip(
        &fixture("tiny/model.safetensors"),
        Some(cfg),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
}

fn golden_prompts(g: &std::collections::HashMap<String, Tensor>) -> DeepPrompts {
    let p = &g["prompts0"];
    let depth = p.dim(0).unwrap();
    DeepPrompts {
        vars: (0..depth)
            .map(|j| Var::from_tensor(&p.get(j).unwrap()).unwrap())
            .collect(),
        first_block: 12 - depth,
    }
}

fn labels(g: &std::collections::HashMap<String, Tensor>) -> Vec<usize> {
    g["labels"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|l| l as usize)
        .collect()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    max_abs_diff(a, b) / scale.max(1e-12)
}

#[test]
fn loss_and_prompt_gradients_match_pytorch() {
    let model = tiny();
    let g = load_tensors("rvpt.safetensors");
    for (name, layerwise) in [("final", false), ("layerwise", true)] {
        let prompts = golden_prompts(&g);
        let enc = PromptedEncoder::new(&model.vision, &prompts).unwrap();
        let frozen = frozen_part(&enc, &g["pixels"], layerwise).unwrap();
        if !layerwise {
            let pooled = enc.prompted_feature(&frozen.prefix).unwrap();
            assert!(max_abs_diff(&pooled, &g["pooled"]) < 1e-4);
            assert!(max_abs_diff(&frozen.target, &g["frozen"]) < 1e-4);
        }
        let cfg = LossConfig {
            layerwise,
            ..LossConfig::default()
        };
        let parts = batch_loss(&model, &enc, &g["text"], &frozen, &labels(&g), &cfg).unwrap();
        let want: Vec<f32> = g[&format!("{name}.loss")].to_vec1().unwrap();
        let got = [parts.total.to_scalar::<f32>().unwrap(), parts.ce, parts.fr];
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "{name}: loss {got:?} vs {want:?}"
            );
        }
        let grads = parts.total.backward().unwrap();
        let ours: Vec<Tensor> = prompts
            .vars
            .iter()
            .map(|v| {
                grads
                    .get(v.as_tensor())
                    .expect("every prompt gets a gradient")
                    .clone()
            })
            .collect();
        for (j, gj) in ours.iter().enumerate() {
            let norm = gj
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0, "{name}: prompt {j} got a zero gradient");
        }
        let ours = Tensor::stack(&ours, 0).unwrap();
        let err = rel_err(&ours, &g[&format!("{name}.grad")]);
        println!("{name}: loss {got:?} (torch {want:?}); prompt gradient max rel error {err:.2e}");
        assert!(err <= 1e-4, "{name}: gradient relative error {err}");
    }
}

#[test]
fn five_sgd_steps_match_torch_optim() {
    let model = tiny();
    let g = load_tensors("rvpt.safetensors");
    let prompts = golden_prompts(&g);
    let enc = PromptedEncoder::new(&model.vision, &prompts).unwrap();
    let frozen = frozen_part(&enc, &g["pixels"], false).unwrap();
    let cfg = SgdConfig {
        lr: 0.002,
        momentum: 0.9,
        dampening: 0.0,
        weight_decay: 5e-4,
        nesterov: false,
    };
    let mut opt = Sgd::new(prompts.vars.clone(), cfg).unwrap();
    for _ in 0..5 {
        let parts = batch_loss(
            &model,
            &enc,
            &g["text"],
            &frozen,
            &labels(&g),
            &LossConfig::default(),
        )
        .unwrap();
        opt.backward_step(&parts.total).unwrap();
    }
    let ours = Tensor::stack(
        &prompts
            .vars
            .iter()
            .map(|v| v.as_tensor().clone())
            .collect::<Vec<_>>(),
        0,
    )
    .unwrap();
    let err = max_abs_diff(&ours, &g["sgd5.prompts"]);
    println!("5 SGD steps: max abs error {err:.2e}");
    assert!(err <= 1e-5);
}

fn tiny_samples() -> Vec<(std::path::PathBuf, usize)> {
    [
        "chelsea.jpg",
        "coffee.png",
        "astronaut.webp",
        "camera.png",
        "rocket-rgba.png",
    ]
    .iter()
    .enumerate()
    .map(|(i, n)| (fixture(&format!("images/{n}")), i % 3))
    .collect()
}

fn small_config() -> RvptConfig {
    RvptConfig {
        epochs: 4,
        batch_size: 2,
        augment: false,
        depth: 6,
        length: 3,
        ..RvptConfig::default()
    }
}

fn fresh(cfg: &RvptConfig) -> FitState {
    FitState {
        prompts: DeepPrompts::init(12, cfg.depth, cfg.length, 64, 1, DType::F32, &Device::Cpu)
            .unwrap(),
        momentum: vec![None; cfg.depth],
        logs: vec![],
    }
}

fn text3() -> Tensor {
    let g = load_tensors("rvpt.safetensors");
    g["text"].clone()
}

fn stacked(p: &DeepPrompts) -> Tensor {
    Tensor::stack(
        &p.vars
            .iter()
            .map(|v| v.as_tensor().clone())
            .collect::<Vec<_>>(),
        0,
    )
    .unwrap()
}

#[test]
fn prefix_cache_gives_the_same_training() {
    let model = tiny();
    let cfg = small_config();
    let mut noop = |_: &FitState| Ok(());
    let cached = fit(
        &model,
        &text3(),
        &tiny_samples(),
        &cfg,
        fresh(&cfg),
        true,
        false,
        &mut noop,
    )
    .unwrap();
    let direct = fit(
        &model,
        &text3(),
        &tiny_samples(),
        &cfg,
        fresh(&cfg),
        false,
        false,
        &mut noop,
    )
    .unwrap();
    let err = max_abs_diff(&stacked(&cached.prompts), &stacked(&direct.prompts));
    println!(
        "cache vs no cache after {} epochs: prompts differ by {err:.2e}",
        cfg.epochs
    );
    assert!(err <= 1e-6);
    for (a, b) in cached.logs.iter().zip(&direct.logs) {
        assert!((a.loss - b.loss).abs() <= 1e-6, "{} vs {}", a.loss, b.loss);
    }
    // Training moved the prompts.
    assert!(max_abs_diff(&stacked(&cached.prompts), &stacked(&fresh(&cfg).prompts)) > 1e-4);
}

#[test]
fn resumed_training_equals_uninterrupted_and_checkpoints_round_trip() {
    let model = tiny();
    let cfg = small_config();
    let mut noop = |_: &FitState| Ok(());
    let straight = fit(
        &model,
        &text3(),
        &tiny_samples(),
        &cfg,
        fresh(&cfg),
        true,
        false,
        &mut noop,
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prompts.safetensors");
    // Crash after two epochs, keeping the checkpoint written after each epoch.
    let mut save = |s: &FitState| {
        if s.logs.len() > 2 {
            return Err(rvpt::Error::Invalid("simulated crash".into()));
        }
        PromptCheckpoint {
            prompts: s.prompts.clone(),
            momentum: s.momentum.clone(),
            meta: CheckpointMeta {
                format: rvpt::train::rvpt::checkpoint::FORMAT.into(),
                config: serde_json::to_value(&cfg).unwrap(),
                base_sha256: "test".into(),
                seed: cfg.seed,
                epoch: s.logs.len(),
                first_block: s.prompts.first_block,
                metrics: serde_json::to_value(&s.logs).unwrap(),
            },
        }
        .save(&path)
    };
    let crashed = fit(
        &model,
        &text3(),
        &tiny_samples(),
        &cfg,
        fresh(&cfg),
        true,
        false,
        &mut save,
    );
    assert!(crashed.is_err());
    let ck = PromptCheckpoint::load(&path, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(ck.meta.epoch, 2);
    assert!(ck.momentum.iter().all(|m| m.is_some()));
    let logs: Vec<EpochLog> = serde_json::from_value(ck.meta.metrics.clone()).unwrap();
    let state = FitState {
        prompts: ck.prompts,
        momentum: ck.momentum,
        logs,
    };
    let resumed = fit(
        &model,
        &text3(),
        &tiny_samples(),
        &cfg,
        state,
        true,
        false,
        &mut noop,
    )
    .unwrap();
    let err = max_abs_diff(&stacked(&resumed.prompts), &stacked(&straight.prompts));
    println!("resumed vs straight: {err:.2e}");
    assert!(err <= 1e-6);
}

#[test]
fn corrupt_or_foreign_checkpoints_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"nope").unwrap();
    assert!(matches!(
        PromptCheckpoint::load(&junk, DType::F32, &Device::Cpu),
        Err(rvpt::Error::Checkpoint { .. })
    ));
    // A model file is a valid safetensors but not a prompt checkpoint.
    match PromptCheckpoint::load(&fixture("tiny/model.safetensors"), DType::F32, &Device::Cpu) {
        Err(rvpt::Error::Checkpoint { reason, .. }) => {
            assert!(reason.contains("not a prompt checkpoint"))
        }
        other => panic!("expected a Checkpoint error, got {:?}", other.err()),
    }
}
