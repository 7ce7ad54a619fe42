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

/// The golden prompts: all of them in the last blocks, or the first `depth` from `first_block`.
fn golden_prompts_at(
    g: &std::collections::HashMap<String, Tensor>,
    first_block: Option<usize>,
    depth: Option<usize>,
) -> DeepPrompts {
    let p = &g["prompts0"];
    let depth = depth.unwrap_or(p.dim(0).unwrap());
    DeepPrompts {
        vars: (0..depth)
            .map(|j| Var::from_tensor(&p.get(j).unwrap()).unwrap())
            .collect(),
        first_block: first_block.unwrap_or(12 - depth),
    }
}

fn golden_prompts(g: &std::collections::HashMap<String, Tensor>) -> DeepPrompts {
    golden_prompts_at(g, None, None)
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
    // Final FR, layer-wise FR, and the placement ablation: prompts in blocks 2..5 (the rest
    // carry their outputs), FR at blocks 6, 9 and 11.
    for (name, repel, first, depth) in [
        ("final", RepelAt::Final, None, None),
        ("layerwise", RepelAt::PromptedBlocks, None, None),
        ("placed", "6,9,11".parse().unwrap(), Some(2), Some(3)),
    ] {
        let prompts = golden_prompts_at(&g, first, depth);
        let cfg = LossConfig {
            repel,
            ..LossConfig::default()
        };
        let enc = PromptedEncoder::new(&model.vision, &prompts).unwrap();
        let frozen = frozen_part(&enc, &g["pixels"], &cfg).unwrap();
        if name == "final" {
            let pooled = enc.prompted_feature(&frozen.prefix).unwrap();
            assert!(max_abs_diff(&pooled, &g["pooled"]) < 1e-4);
            assert!(max_abs_diff(&frozen.target, &g["frozen"]) < 1e-4);
        }
        let parts = batch_loss(&model, &enc, &g["text"], &frozen, &labels(&g), &cfg).unwrap();
        let want: Vec<f32> = g[&format!("{name}.loss")].to_vec1().unwrap();
        let got = parts.values().unwrap();
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
    let frozen = frozen_part(&enc, &g["pixels"], &LossConfig::default()).unwrap();
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
        blocks: PromptPlacement::Last(6),
        length: 3,
        ..RvptConfig::default()
    }
}

fn fresh(cfg: &RvptConfig) -> FitState {
    let blocks = cfg.blocks.resolve(12).unwrap();
    FitState::new(DeepPrompts::init(blocks, cfg.length, 64, 1, &Device::Cpu).unwrap())
}

fn text3() -> Tensor {
    let g = load_tensors("rvpt.safetensors");
    g["text"].clone()
}

/// [`fit`] on the tiny fixture images and the golden text embeddings, without progress bars.
fn fit_tiny(
    model: &Clip,
    cfg: &RvptConfig,
    state: FitState,
    use_cache: bool,
    on_epoch: &mut dyn FnMut(&FitState) -> rvpt::Result<()>,
) -> rvpt::Result<FitState> {
    fit(
        model,
        &text3(),
        &tiny_samples(),
        cfg,
        state,
        use_cache,
        rvpt::progress::Progress::Silent,
        on_epoch,
    )
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
    let cached = fit_tiny(&model, &cfg, fresh(&cfg), true, &mut noop).unwrap();
    let direct = fit_tiny(&model, &cfg, fresh(&cfg), false, &mut noop).unwrap();
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
    let straight = fit_tiny(&model, &cfg, fresh(&cfg), true, &mut noop).unwrap();

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
    let crashed = fit_tiny(&model, &cfg, fresh(&cfg), true, &mut save);
    assert!(crashed.is_err());
    let ck = PromptCheckpoint::load(&path, &Device::Cpu).unwrap();
    assert_eq!(ck.meta.epoch, 2);
    assert!(ck.momentum.iter().all(|m| m.is_some()));
    let logs: Vec<EpochLog> = serde_json::from_value(ck.meta.metrics.clone()).unwrap();
    let state = FitState {
        prompts: ck.prompts,
        momentum: ck.momentum,
        logs,
    };
    let resumed = fit_tiny(&model, &cfg, state, true, &mut noop).unwrap();
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
        PromptCheckpoint::load(&junk, &Device::Cpu),
        Err(rvpt::Error::Checkpoint { .. })
    ));
    // A model file is a valid safetensors but not a prompt checkpoint.
    match PromptCheckpoint::load(&fixture("tiny/model.safetensors"), &Device::Cpu) {
        Err(rvpt::Error::Checkpoint { reason, .. }) => {
            assert!(reason.contains("not a prompt checkpoint"))
        }
        other => panic!("expected a Checkpoint error, got {:?}", other.err()),
    }
}

#[test]
fn prompt_and_repel_blocks_parse_and_refuse_what_cannot_work() {
    let last: PromptPlacement = "6".parse().unwrap();
    assert_eq!(last.resolve(12).unwrap(), 6..12);
    let range: PromptPlacement = "0..6".parse().unwrap();
    assert_eq!(range.resolve(12).unwrap(), 0..6);
    let inclusive: PromptPlacement = "3..=5".parse().unwrap();
    assert_eq!(inclusive.resolve(12).unwrap(), 3..6);
    for bad in ["0", "13", "4..4", "6..13"] {
        let p: PromptPlacement = bad.parse().unwrap();
        // The library names the setting in its terms; the command line renders it as a flag.
        let err = p.resolve(12).unwrap_err();
        assert!(
            matches!(
                err,
                rvpt::Error::Setting {
                    setting: rvpt::Setting::PromptBlocks,
                    ..
                }
            ),
            "{bad}: {err}"
        );
        let shown = rvpt::cli::flags::describe(&err);
        assert!(
            shown.starts_with(&format!("--prompt-blocks {bad}:")),
            "{shown}"
        );
    }
    assert!("six".parse::<PromptPlacement>().is_err());
    // The default follows the depth: the last half (the paper's 6 of 12), at least one.
    let half: PromptPlacement = "half".parse().unwrap();
    assert_eq!(half.resolve(12).unwrap(), 6..12);
    assert_eq!(half.resolve(4).unwrap(), 2..4);
    assert_eq!(half.resolve(1).unwrap(), 0..1);

    let repel: RepelAt = "9..=11".parse().unwrap();
    assert_eq!(repel, RepelAt::Blocks(vec![9, 10, 11]));
    assert_eq!("11,6,9,6".parse::<RepelAt>().unwrap().to_string(), "6,9,11");
    assert_eq!(repel.resolve(0..6, 12).unwrap(), Some(vec![9, 10, 11]));
    assert_eq!(RepelAt::Final.resolve(6..12, 12).unwrap(), None);
    assert_eq!(
        RepelAt::PromptedBlocks.resolve(2..5, 12).unwrap(),
        Some(vec![2, 3, 4])
    );
    // Below the first prompted block the two encoders are the same: FR there cannot move.
    let err = "4,8"
        .parse::<RepelAt>()
        .unwrap()
        .resolve(6..12, 12)
        .unwrap_err();
    assert!(err.to_string().contains("block 4"), "{err}");
    assert!("12".parse::<RepelAt>().unwrap().resolve(6..12, 12).is_err());
    // Written into checkpoints and reports as typed.
    let cfg = RvptConfig {
        blocks: range,
        loss: LossConfig {
            repel,
            ..LossConfig::default()
        },
        ..RvptConfig::default()
    };
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["blocks"], "0..6");
    assert_eq!(json["loss"]["repel"], "9,10,11");
    assert_eq!(serde_json::from_value::<RvptConfig>(json).unwrap(), cfg);
}

/// A crop scale outside (0, 1] is refused by the library too (the CLI checks it first), and
/// CoOp's augmentation at scale 1 (whole images, flipped or not) trains.
#[test]
fn crop_scale_outside_the_unit_interval_is_refused() {
    let model = tiny();
    let mut noop = |_: &FitState| Ok(());
    for (scale, ok) in [(1.5, false), (0.0, false), (f64::NAN, false), (1.0, true)] {
        let cfg = RvptConfig {
            epochs: 1,
            augment: true,
            crop_scale: scale,
            ..small_config()
        };
        let r = fit_tiny(&model, &cfg, fresh(&cfg), false, &mut noop);
        match r {
            Ok(_) => assert!(ok, "crop scale {scale} accepted"),
            Err(e) => {
                assert!(!ok, "crop scale {scale}: {e}");
                assert!(
                    e.to_string().contains(&format!("crop scale {scale}")),
                    "{e}"
                );
            }
        }
    }
}
