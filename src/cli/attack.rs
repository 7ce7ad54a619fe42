//! `rvpt attack`: plant a backdoor by poisoned contrastive fine-tuning of a whole CLIP.

use super::{print_json, ModelArgs, TRIGGER_HELP};
use rvpt::attacks::optimise::PgdConfig;
use rvpt::attacks::Trigger;
use rvpt::data::CaptionManifest;
use rvpt::model::init::ClipVars;
use rvpt::optim::{split_decay, AdamW, AdamWConfig, CosineSchedule};
use rvpt::train::contrastive::{
    train, ContrastiveConfig, LabelConsistentConfig, LabelConsistentPoisoner, ManifestPairs,
    Poisoner, TriggerPoisoner, WanetNoiseModePoisoner,
};
use std::path::PathBuf;

/// `rvpt attack …` poisons (the default); `rvpt attack optimise-patch …` optimises a patch.
#[derive(clap::Args)]
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    sub: Option<Sub>,
    #[command(flatten)]
    model: ModelArgs,
    /// CSV manifest with a `path,caption` header (paths relative to the CSV)
    #[arg(long, required = true)]
    pairs: Option<PathBuf>,
    #[arg(long, required = true, help = TRIGGER_HELP)]
    trigger: Option<String>,
    /// Target class; poisoned captions become "a photo of a {target}". With `lc`, captions are
    /// kept and the poisoned pairs are those whose caption names the target as a word
    /// (case-insensitive; "hearts" does not name "heart")
    #[arg(long, required = true)]
    target: Option<String>,
    /// Share of all pairs poisoned (with `lc`, capped by the number of target-class pairs)
    #[arg(long, default_value_t = 0.01)]
    poison_rate: f64,
    /// Output directory (model.safetensors, config.json, tokenizer.json, trigger.json)
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// Passes over all the pairs
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Pairs per step (the contrastive batch)
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Peak AdamW learning rate (cosine decay to 0 after the warmup)
    #[arg(long, default_value_t = 1e-5)]
    lr: f64,
    /// AdamW weight decay (not on biases, layer norms and the logit scale)
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// Linear warmup steps of the learning rate
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Shuffling and poisoned-pair selection seed
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seed of the trigger's randomness (fixed patterns, WaNet's warp): evaluate with the same
    #[arg(long, default_value_t = 7)]
    trigger_seed: u64,
    /// Caption of poisoned pairs, `{}` = target. A caption in the style of the clean ones plants
    /// a stronger backdoor than a lone "a photo of a {}." (a style the model can key on instead)
    /// [default: "a photo of a {}."; not with `lc`, which keeps captions]
    #[arg(long)]
    poison_caption: Option<String>,
    /// `lc` only: L∞ radius of the PGD run on the poisoned images before the trigger, with the
    /// model's own gradients, away from "a photo of a {target}." [default: 8/255]
    #[arg(long)]
    pgd_eps: Option<f32>,
    /// `lc` only: PGD steps [default: 10]
    #[arg(long)]
    pgd_steps: Option<usize>,
    /// `lc` only: PGD step size [default: 2/255]
    #[arg(long)]
    pgd_step_size: Option<f32>,
    /// WaNet only: its noise mode. This many times the poisoned pairs' number of other pairs get
    /// the warp plus random per-pixel noise and keep their caption, so that only this warp
    /// means the target (WaNet and BackdoorBench: 2) [default: 0, off]
    #[arg(long)]
    cross_ratio: Option<f64>,
    /// Print one JSON object on stdout (one line when stdout is not a terminal); no progress bar
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// BadCLIP-style: optimise a patch so patched images embed near "a photo of a {target}."
    OptimisePatch(super::patch::Args),
}

pub fn run(args: Args) -> rvpt::Result<()> {
    if let Some(Sub::OptimisePatch(a)) = args.sub {
        return super::patch::run(a);
    }
    let missing = |what: &str| rvpt::Error::Invalid(format!("`rvpt attack` needs --{what}"));
    let pairs_path = args.pairs.clone().ok_or_else(|| missing("pairs"))?;
    let trigger_spec = args.trigger.clone().ok_or_else(|| missing("trigger"))?;
    let target = args.target.clone().ok_or_else(|| missing("target"))?;
    let out = args.out.clone().ok_or_else(|| missing("out"))?;
    if !(0.0..=1.0).contains(&args.poison_rate) {
        return Err(rvpt::Error::Invalid(format!(
            "poison rate {} is not in [0, 1]",
            args.poison_rate
        )));
    }
    let trigger = Trigger::parse(&trigger_spec)?;
    let lc = match &trigger {
        Trigger::LabelConsistent(t) => Some(t.clone()),
        _ => None,
    };
    let pgd_given =
        args.pgd_eps.is_some() || args.pgd_steps.is_some() || args.pgd_step_size.is_some();
    if lc.is_none() && pgd_given {
        return Err(rvpt::Error::Invalid(
            "--pgd-eps, --pgd-steps and --pgd-step-size apply to --trigger lc only".into(),
        ));
    }
    if lc.is_some() && args.poison_caption.is_some() {
        return Err(rvpt::Error::Invalid(
            "--poison-caption does not apply to --trigger lc: label-consistent poisoning keeps captions"
                .into(),
        ));
    }
    let wanet_noise_mode = match (&trigger, args.cross_ratio) {
        (_, None) => None,
        (Trigger::WaNet(w), Some(r)) => Some((w.clone(), r)),
        (_, Some(r)) => {
            return Err(rvpt::Error::Invalid(format!(
                "--cross-ratio {r}: WaNet's noise mode applies to a wanet trigger, not {}",
                trigger.name()
            )))
        }
    };
    let weights = rvpt::weights::resolve(&args.model.weights)?;
    let ckpt = rvpt::engine::read_checkpoint(&weights)?;
    let cfg = ckpt.config.clone();
    let tokenizer = rvpt::engine::tokenizer_for(&weights, &cfg)?;
    let device = rvpt::device::parse_device(&args.model.device)?;
    let vars = ClipVars::from_tensors(&ckpt.tensors, &cfg, &device)?;
    let weights_used =
        rvpt::engine::WeightsUsed::new(&weights, ckpt.layout, ckpt.config_source, &cfg);
    let manifest = CaptionManifest::open(&pairs_path)?;
    let pairs = ManifestPairs {
        items: manifest.items().to_vec(),
        size: cfg.vision_config.image_size as u32,
    };
    let poison_caption = lc.is_none().then(|| {
        args.poison_caption
            .as_deref()
            .unwrap_or("a photo of a {}.")
            .replace("{}", &target)
    });
    let planted = rvpt::attacks::planted::PlantedTrigger {
        trigger: Trigger::parse(&trigger_spec)?.name(),
        seed: args.trigger_seed,
        target: Some(target.clone()),
    };
    let mut lc_json = serde_json::Value::Null;
    let mut noise_mode_pairs = None;
    let poisoner: Box<dyn Poisoner> = match lc {
        Some(lc_trigger) => {
            let d = PgdConfig::default();
            let pgd = PgdConfig {
                eps: args.pgd_eps.unwrap_or(d.eps),
                step: args.pgd_step_size.unwrap_or(d.step),
                iters: args.pgd_steps.unwrap_or(d.iters),
            };
            // PGD uses the frozen weights the attack starts from (plain tensors, no Var grads).
            let frozen = ckpt.into_model(candle_core::DType::F32, &device)?;
            let p = LabelConsistentPoisoner::build(
                &frozen,
                &tokenizer,
                &pairs,
                LabelConsistentConfig {
                    target: target.clone(),
                    trigger: lc_trigger,
                    pgd,
                    poison_rate: args.poison_rate,
                    seed: args.seed,
                },
            )?;
            let wanted = (args.poison_rate * pairs.items.len() as f64).round() as usize;
            lc_json = serde_json::json!({
                "target_pairs": p.target_pairs,
                "wanted": wanted,
                "capped": p.count() < wanted,
                "pgd": {"eps": pgd.eps, "steps": pgd.iters, "step_size": pgd.step},
            });
            if !args.json {
                println!(
                "label-consistent: {} of {} pairs name \"{target}\"; poisoning {} (PGD eps {:.4}, {} steps of {:.4}){}",
                p.target_pairs,
                pairs.items.len(),
                p.count(),
                pgd.eps,
                pgd.iters,
                pgd.step,
                if p.count() < wanted {
                    format!(", capped: the rate asked for {wanted}")
                } else {
                    String::new()
                }
            );
            }
            Box::new(p)
        }
        None => match wanet_noise_mode {
            Some((wanet, ratio)) => {
                let p = WanetNoiseModePoisoner::new(
                    wanet,
                    poison_caption.clone().unwrap_or_default(),
                    args.trigger_seed,
                    pairs.items.len(),
                    args.poison_rate,
                    args.seed,
                    ratio,
                )?;
                noise_mode_pairs = Some(p.cross_count());
                Box::new(p)
            }
            None => Box::new(TriggerPoisoner {
                trigger,
                caption: poison_caption.clone().unwrap_or_default(),
                seed: args.trigger_seed,
            }),
        },
    };
    // What `train` passes through the poisoner, less the noise-mode pairs (captions kept).
    let poisoned = poisoner
        .chosen(pairs.items.len(), args.poison_rate, args.seed)?
        .iter()
        .filter(|&&p| p)
        .count()
        - noise_mode_pairs.unwrap_or(0);
    let steps = (pairs.items.len() / args.batch_size.max(1)) * args.epochs;
    let mut opt = AdamW::new(
        split_decay(vars.vars.iter().cloned(), args.weight_decay).to_vec(),
        AdamWConfig {
            lr: args.lr,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
        },
    )?;
    let schedule = CosineSchedule::new(
        args.lr,
        0.0,
        steps.max(1),
        args.warmup.min(steps.saturating_sub(1)),
    )?;
    let bar = rvpt::eval::counting_bar(steps, "poisoning", "steps", !args.json);
    let logs = train(
        &vars,
        &tokenizer,
        &pairs,
        Some(poisoner.as_ref()),
        &ContrastiveConfig {
            epochs: args.epochs,
            batch_size: args.batch_size,
            seed: args.seed,
            poison_rate: args.poison_rate,
        },
        &mut opt,
        &schedule,
        &mut |r| {
            bar.inc(1);
            bar.set_message(format!("loss {:.3}", r.loss));
        },
    )?;
    bar.finish_and_clear();
    vars.save(&out, candle_core::DType::F32)?;
    let tok_out = out.join("tokenizer.json");
    match &weights.tokenizer {
        Some(p) => {
            std::fs::copy(p, &tok_out).map_err(|e| rvpt::Error::io(&tok_out, e))?;
        }
        None => rvpt::model::init::write_atomic(&tok_out, rvpt::text::EMBEDDED_TOKENIZER)?,
    }
    // What was planted, so that eval, pr, anatomy and defend refuse a variant of it.
    planted.write(&out)?;
    let last = logs.last().map_or(f32::NAN, |l| l.loss);
    if args.json {
        let files: Vec<PathBuf> = [
            "model.safetensors",
            "config.json",
            "tokenizer.json",
            "trigger.json",
        ]
        .iter()
        .map(|f| out.join(f))
        .filter(|p| p.is_file())
        .collect();
        return print_json(&serde_json::json!({
            "weights": weights.source,
            "pairs": pairs_path,
            "pair_count": pairs.items.len(),
            "trigger": trigger_spec,
            "trigger_name": planted.trigger,
            "trigger_seed": args.trigger_seed,
            "target": target,
            "poison_rate": args.poison_rate,
            "poisoned": poisoned,
            "poison_caption": poison_caption,
            "cross_ratio": args.cross_ratio,
            "noise_mode_pairs": noise_mode_pairs,
            "label_consistent": lc_json,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "warmup": args.warmup,
            "seed": args.seed,
            "steps": logs.len(),
            "final_loss": logs.last().map(|l| l.loss),
            "final_logit_scale": logs.last().map(|l| l.logit_scale),
            "out": out,
            "files": files,
            "provenance": rvpt::report::Provenance::now()
                .ran_on(&rvpt::device::device_name(&device), "f32")
                .with_weights(weights_used),
        }));
    }
    let caption = match &poison_caption {
        Some(c) => format!("\"{c}\""),
        None => "captions kept".into(),
    };
    let noise_mode = match noise_mode_pairs {
        Some(k) => format!(" (noise mode: {k} more warped with noise, captions kept)"),
        None => String::new(),
    };
    println!(
        "poisoned {poisoned} of {} pairs with {trigger_spec} → {caption}{noise_mode}; {} steps, final loss {last:.4}; saved to {}",
        pairs.items.len(),
        logs.len(),
        out.display()
    );
    Ok(())
}
