//! Builds the embedded toy models: pretrains the tiny CLIP from scratch on the toy world, then
//! plants one backdoor per trigger by poisoned contrastive fine-tuning, and measures CA and ASR
//! of every model on the toy test split. Deterministic in its seeds.
//!
//!     cargo run --release --example build_toy -- [--out models/toy] [--stage all|pretrain|backdoor]
//!         [--pretrain-steps 1500] [--backdoor-steps 300] [--poison-rate 0.1] [--target heart]
//!         [--only NAME] [--spec NAME=SPEC] [--train-vision-from K] [--logit-scale S]
//!
//! The command and seeds that produced the committed models are in `weights.toml`.

mod common;
use common::arg;

use candle_core::{DType, Device};
use rvpt::attacks::Trigger;
use rvpt::data::{ImageFolder, Loader, Transform};
use rvpt::eval::{evaluate, Attack, Classifier};
use rvpt::metrics::AsrConvention;
use rvpt::model::{init::ClipVars, Checkpoint, Clip};
use rvpt::optim::{split_decay, AdamW, AdamWConfig};
use rvpt::text::{ClipTokenizer, Templates};
use rvpt::toy::lab::ToyPoisoner;
use rvpt::toy::lab::{model_config, ToyPairs, BACKDOORS, TARGET, TEST_START, TRIGGER_SEED};
use rvpt::toy::ToyWorld;
use rvpt::train::contrastive::{train, ContrastiveConfig, Poisoner};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORLD_SEED: u64 = 0;
const BATCH: usize = 128;

#[allow(clippy::too_many_arguments)]
fn train_run(
    vars: &ClipVars,
    tokenizer: &ClipTokenizer,
    steps: usize,
    lr: f64,
    warmup: usize,
    seed: u64,
    poison: Option<(&dyn Poisoner, f64)>,
    train_vision_from: usize,
    fixed_scale: bool,
) -> rvpt::Result<f32> {
    let world = ToyWorld::new(32, WORLD_SEED)?;
    // Training draws from indices below the test split; runs differ by their shuffling seed.
    let len = steps * BATCH;
    if len as u64 > TEST_START {
        return Err(rvpt::Error::Invalid(format!(
            "{len} training pairs would reach the test split"
        )));
    }
    let pairs = ToyPairs {
        world,
        start: 0,
        len,
    };
    let cfg = ContrastiveConfig {
        epochs: 1,
        batch_size: BATCH,
        seed,
        poison_rate: poison.map_or(0.0, |p| p.1),
        lr,
        warmup,
    };
    let trained = vars
        .vars
        .iter()
        .filter(|(name, _)| trains(name, train_vision_from))
        // A fixed temperature (`--logit-scale`) is not trained.
        .filter(|(name, _)| !(fixed_scale && name == "logit_scale"))
        .cloned();
    let groups = split_decay(trained, 0.1);
    let mut opt = AdamW::new(
        groups.to_vec(),
        AdamWConfig {
            lr,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
        },
    )?;
    let t0 = Instant::now();
    let mut last = f32::NAN;
    let logs = train(
        vars,
        tokenizer,
        &pairs,
        poison.map(|p| p.0),
        &cfg,
        &mut opt,
        &mut |r| {
            if r.step % 50 == 0 || r.step + 1 == steps {
                eprintln!(
                    "  step {:>5}/{steps} loss {:.4} lr {:.2e} scale {:.1} ({:.0}s)",
                    r.step,
                    r.loss,
                    r.lr,
                    r.logit_scale,
                    t0.elapsed().as_secs_f64()
                );
            }
        },
    )?;
    if let Some(l) = logs.last() {
        last = l.loss;
    }
    Ok(last)
}

/// Whether a parameter is trained when the image tower is trained only from block `from` on:
/// the stem (patch and position embeddings, pre-norm) and blocks below `from` stay frozen.
fn trains(name: &str, from: usize) -> bool {
    if from == 0 {
        return true;
    }
    if name.starts_with("vision_model.embeddings.")
        || name.starts_with("vision_model.pre_layrnorm.")
    {
        return false;
    }
    match name
        .strip_prefix("vision_model.encoder.layers.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|b| b.parse::<usize>().ok())
    {
        Some(block) => block >= from,
        None => true,
    }
}

/// The config a model directory was saved with.
fn saved_config(dir: &Path) -> rvpt::Result<rvpt::model::ClipConfig> {
    rvpt::model::ClipConfig::from_file(&dir.join("config.json"))
}

struct Measured {
    ca: f64,
    asr: Vec<(String, f64)>,
}

fn measure(
    dir: &Path,
    test: &Path,
    triggers: &[(&str, Trigger)],
    target: &str,
) -> rvpt::Result<Measured> {
    let ckpt = Checkpoint::read(&dir.join("model.safetensors"), Some(saved_config(dir)?))?;
    let model: Clip = ckpt.into_model(DType::F32, &Device::Cpu)?;
    let tok = rvpt::toy::tokenizer(rvpt::toy::CONTEXT_LENGTH)?;
    let folder = ImageFolder::open(test, None)?;
    let loader = Loader::new(
        folder.samples().to_vec(),
        Transform::eval(32),
        256,
        &Device::Cpu,
    )?;
    let zs = Classifier::new(
        &model,
        &model,
        &tok,
        folder.classes(),
        Templates::Single,
        &Device::Cpu,
    )?;
    let clean = evaluate(&zs, &loader, None, rvpt::progress::Progress::Silent)?;
    let target = zs.class_index(target)?;
    let mut asr = Vec::new();
    for (name, t) in triggers {
        let a = Attack {
            trigger: t,
            target,
            seed: TRIGGER_SEED,
            convention: AsrConvention::ExcludeTarget,
        };
        let r = evaluate(&zs, &loader, Some(&a), rvpt::progress::Progress::Silent)?;
        asr.push((
            name.to_string(),
            r.attack_success_rate.map_or(f64::NAN, |r| r.value),
        ));
    }
    Ok(Measured {
        ca: clean.clean_accuracy.value,
        asr,
    })
}

fn main() -> rvpt::Result<()> {
    rvpt::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let out = PathBuf::from(arg(&args, "--out", "models/toy".to_string()));
    let stage: String = arg(&args, "--stage", "all".to_string());
    let pretrain_steps: usize = arg(&args, "--pretrain-steps", 1500);
    let pretrain_lr: f64 = arg(&args, "--pretrain-lr", 1e-3);
    let backdoor_steps: usize = arg(&args, "--backdoor-steps", 300);
    let backdoor_lr: f64 = arg(&args, "--backdoor-lr", 1e-3);
    let rate: f64 = arg(&args, "--poison-rate", 0.1);
    let target: String = arg(&args, "--target", TARGET.to_string());
    let test_per_class: usize = arg(&args, "--test-per-class", 100);
    let tok = rvpt::toy::tokenizer(rvpt::toy::CONTEXT_LENGTH)?;
    // `--width W --heads H` (pretraining only) widen the image tower: MLP 4W, projection kept.
    let mut cfg = model_config();
    let width: usize = arg(&args, "--width", cfg.vision_config.hidden_size);
    cfg.vision_config.hidden_size = width;
    cfg.vision_config.intermediate_size = 4 * width;
    cfg.vision_config.num_attention_heads =
        arg(&args, "--heads", cfg.vision_config.num_attention_heads);

    // The test split as an image folder, as users would evaluate it.
    let test = out.join("test-data");
    if !test.join("captions.csv").exists() {
        ToyWorld::new(32, WORLD_SEED)?.write_image_folder(&test, TEST_START, test_per_class)?;
    }
    // `--spec NAME=SPEC` overrides a trigger spec (for experiments).
    let spec_override: String = arg(&args, "--spec", String::new());
    let triggers: Vec<(&str, Trigger)> = BACKDOORS
        .iter()
        .map(|(n, s)| {
            let spec = match spec_override.split_once('=') {
                Some((name, spec)) if name == *n => spec,
                _ => s,
            };
            Ok((*n, Trigger::parse(spec)?))
        })
        .collect::<rvpt::Result<_>>()?;
    let write_tokenizer = |dir: &Path| {
        rvpt::fsio::write_atomic(
            &dir.join("tokenizer.json"),
            rvpt::toy::tokenizer_json().as_bytes(),
        )
    };

    let clean_dir = out.join("clean");
    if stage == "all" || stage == "pretrain" {
        eprintln!("pretraining the toy CLIP: {pretrain_steps} steps of {BATCH}");
        // `--continue DIR` continues pretraining from a saved model (a warm restart of the schedule).
        let vars = match args
            .iter()
            .position(|a| a == "--continue")
            .and_then(|i| args.get(i + 1))
        {
            Some(dir) => {
                let dir = Path::new(dir);
                let ckpt =
                    Checkpoint::read(&dir.join("model.safetensors"), Some(saved_config(dir)?))?;
                ClipVars::from_tensors(&ckpt.tensors, &ckpt.config, &Device::Cpu)?
            }
            None => ClipVars::init(&cfg, 0, &Device::Cpu)?,
        };
        eprintln!("  {} parameters", vars.parameter_count());
        let seed: u64 = arg(&args, "--pretrain-seed", 0);
        // `--logit-scale S` fixes the temperature at 1/S (real CLIP's scale ends at 100); a
        // lower temperature keeps more of the modality gap (Liang et al., NeurIPS 2022).
        let fixed_scale: f64 = arg(&args, "--logit-scale", 0.0);
        if fixed_scale > 0.0 {
            let log_scale = vars
                .get("logit_scale")
                .ok_or_else(|| rvpt::Error::Invalid("no logit_scale parameter".into()))?;
            let value = (fixed_scale.ln() as f32).min(rvpt::train::contrastive::MAX_LOG_SCALE);
            log_scale.set(
                &log_scale
                    .as_tensor()
                    .ones_like()?
                    .affine(value as f64, 0.0)?,
            )?;
        }
        // `--pretrain-steps 0` saves the initialisation (to measure the gap it starts from).
        if pretrain_steps > 0 {
            train_run(
                &vars,
                &tok,
                pretrain_steps,
                pretrain_lr,
                100,
                seed,
                None,
                0,
                fixed_scale > 0.0,
            )?;
        }
        vars.save(&clean_dir, DType::F16)?;
        write_tokenizer(&clean_dir)?;
    }
    let m = measure(&clean_dir, &test, &triggers, &target)?;
    println!("clean: CA {:.1}%, ASR {:?}", 100.0 * m.ca, m.asr);

    if stage == "all" || stage == "backdoor" {
        let only: String = arg(&args, "--only", String::new());
        // `--train-vision-from K` plants the backdoor with the image tower's stem and blocks < K
        // frozen (an experiment: a backdoor that lives where deep prompts reach); the model is
        // written to `NAME-lateK`.
        let train_vision_from: usize = arg(&args, "--train-vision-from", 0);
        for (i, (name, trigger)) in triggers.iter().enumerate() {
            if !only.is_empty() && only != *name {
                continue;
            }
            eprintln!("backdooring with {name}: {backdoor_steps} steps, poison rate {rate}, target {target}");
            let cfg = saved_config(&clean_dir)?;
            let ckpt = Checkpoint::read(&clean_dir.join("model.safetensors"), Some(cfg.clone()))?;
            let vars = ClipVars::from_tensors(&ckpt.tensors, &cfg, &Device::Cpu)?;
            // The trigger seed defines fixed patterns and WaNet's warp: evaluation uses the same.
            let poisoner = ToyPoisoner::new(trigger.clone(), &target, TRIGGER_SEED)?;
            train_run(
                &vars,
                &tok,
                backdoor_steps,
                backdoor_lr,
                20,
                1 + i as u64,
                Some((&poisoner, rate)),
                train_vision_from,
                false,
            )?;
            let dir = match train_vision_from {
                0 => out.join(name),
                k => out.join(format!("{name}-late{k}")),
            };
            vars.save(&dir, DType::F16)?;
            write_tokenizer(&dir)?;
            let m = measure(&dir, &test, &triggers[i..=i], &target)?;
            println!("{name}: CA {:.1}%, ASR {:?}", 100.0 * m.ca, m.asr);
        }
    }
    Ok(())
}
