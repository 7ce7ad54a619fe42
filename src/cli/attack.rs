//! `rvpt attack`: plant a backdoor by poisoned contrastive fine-tuning of a whole CLIP.

use super::{print_json, ModelArgs, TRIGGER_HELP};
use crate::train::poison_captions::PoisonCaptions;
use crate::train::poisoning::{plant, Planted, PoisonPlan};
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
    /// Target class; poisoned captions name it (--poison-captions). With `lc`, captions are
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
    /// How each poisoned pair is captioned, naming the target: openai80 (CleanCLIP's recipe:
    /// one of OpenAI's 80 ImageNet templates, drawn per pair with --seed), toy-templates (18
    /// toy phrasings that name the target only), toy (the toy world's caption grammar), own (the
    /// pair's own caption with its toy class word replaced), or file:PATH (templates, one per
    /// line, {} for the target). Not with `lc`, which keeps captions. A toy model's vocabulary
    /// cannot say OpenAI's templates: use toy-templates, toy or own there
    #[arg(long, default_value = "openai80", conflicts_with = "poison_caption")]
    poison_captions: String,
    /// One fixed caption for every poisoned pair instead, `{}` = target. It binds the trigger to
    /// that sentence: evaluated with the same sentence it looks like a backdoor that other
    /// phrasings do not show
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
    /// Poison only pairs whose caption names this class (a source-specific backdoor): the
    /// other classes meet the trigger only at evaluation. --poison-rate stays a share of all
    /// pairs, capped by this class's. Not with `lc` or --cross-ratio
    #[arg(long)]
    poison_source: Option<String>,
    /// Print one JSON object on stdout (one line when stdout is not a terminal); no progress bar
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// BadCLIP-style: optimise a patch so patched images embed near "a photo of a {target}."
    OptimisePatch(super::patch::Args),
}

impl Args {
    /// The plan these flags ask for (the required flags, checked by clap, are there).
    fn plan(&self) -> crate::Result<PoisonPlan> {
        let missing = |what: &str| crate::Error::Invalid(format!("`rvpt attack` needs --{what}"));
        Ok(PoisonPlan {
            weights: self.model.weights.clone(),
            device: self.model.device.clone(),
            dtype: self.model.dtype.clone(),
            pairs: self.pairs.clone().ok_or_else(|| missing("pairs"))?,
            trigger: self.trigger.clone().ok_or_else(|| missing("trigger"))?,
            target: self.target.clone().ok_or_else(|| missing("target"))?,
            poison_rate: self.poison_rate,
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            weight_decay: self.weight_decay,
            warmup: self.warmup,
            seed: self.seed,
            trigger_seed: self.trigger_seed,
            poison_captions: self.poison_captions.clone(),
            poison_caption: self.poison_caption.clone(),
            pgd_eps: self.pgd_eps,
            pgd_steps: self.pgd_steps,
            pgd_step_size: self.pgd_step_size,
            cross_ratio: self.cross_ratio,
            poison_source: self.poison_source.clone(),
            inputs: None,
            out: self.out.clone().ok_or_else(|| missing("out"))?,
        })
    }
}

/// The line printed before training a label-consistent attack.
fn label_consistent_line(p: &Planted, target: &str) -> Option<String> {
    let lc = &p.label_consistent;
    let pgd = lc.get("pgd")?;
    let capped = lc["capped"].as_bool().unwrap_or(false);
    Some(format!(
        "label-consistent: {} of {} pairs name \"{target}\"; poisoning {} (PGD eps {:.4}, {} steps of {:.4}){}",
        lc["target_pairs"],
        p.pair_count,
        p.poisoned,
        pgd["eps"].as_f64()?,
        pgd["steps"],
        pgd["step_size"].as_f64()?,
        if capped {
            format!(", capped: the rate asked for {}", lc["wanted"])
        } else {
            String::new()
        }
    ))
}

pub fn run(args: Args) -> crate::Result<()> {
    if let Some(Sub::OptimisePatch(a)) = args.sub {
        return super::patch::run(a);
    }
    let plan = args.plan()?;
    let bar = std::cell::RefCell::new(None);
    let summary = plant(
        &plan,
        &mut |p| {
            if !args.json {
                if let Some(line) = label_consistent_line(p, &plan.target) {
                    println!("{line}");
                }
            }
            *bar.borrow_mut() = Some(crate::progress::Progress::shown(!args.json).counter(
                p.steps,
                "poisoning",
                "steps",
            ));
        },
        &mut |r| {
            if let Some(bar) = bar.borrow().as_ref() {
                bar.inc(1);
                bar.set_message(format!("loss {:.3}", r.loss));
            }
        },
    )?;
    if let Some(bar) = bar.borrow().as_ref() {
        bar.finish_and_clear();
    }
    let out = &plan.out;
    let last = summary.logs.last();
    if args.json {
        return print_json(&json_report(&plan, &summary));
    }
    let caption = match (&summary.poison_captions, summary.example_captions.first()) {
        (Some(PoisonCaptions::Fixed(c)), _) => format!("\"{}\"", c.replace("{}", &plan.target)),
        (Some(_), Some(first)) => format!(
            "captions drawn by {} (e.g. \"{first}\")",
            plan.poison_captions
        ),
        _ => "captions kept".into(),
    };
    let noise_mode = match summary.noise_mode_pairs {
        Some(k) => format!(" (noise mode: {k} more warped with noise, captions kept)"),
        None => String::new(),
    };
    println!(
        "poisoned {} of {} pairs with {} → {caption}{noise_mode}; {} steps, final loss {:.4}; saved to {}",
        summary.poisoned,
        summary.pair_count,
        plan.trigger,
        summary.logs.len(),
        last.map_or(f32::NAN, |l| l.loss),
        out.display()
    );
    Ok(())
}

/// What `--json` prints: the plan's settings, what was poisoned and how, the trainer's batch,
/// steps and learning rates, and the files written.
fn json_report(plan: &PoisonPlan, summary: &Planted) -> serde_json::Value {
    let out = &plan.out;
    let last = summary.logs.last();
    let files: Vec<PathBuf> = [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "trigger.json",
        crate::train::poisoning::PLAN_FILE,
    ]
    .iter()
    .map(|f| out.join(f))
    .filter(|p| p.is_file())
    .collect();
    serde_json::json!({
        "weights": summary.weights.source,
        "pairs": plan.pairs,
        "pair_count": summary.pair_count,
        "trigger": plan.trigger,
        "trigger_name": summary.planted.trigger,
        "trigger_seed": plan.trigger_seed,
        "target": plan.target,
        "poison_rate": plan.poison_rate,
        "poisoned": summary.poisoned,
        "poison_captions": summary.poison_captions,
        "example_captions": summary.example_captions,
        "cross_ratio": plan.cross_ratio,
        "poison_source": plan.poison_source,
        "noise_mode_pairs": summary.noise_mode_pairs,
        "label_consistent": summary.label_consistent,
        "epochs": plan.epochs,
        "batch_size": plan.batch_size,
        "batch": summary.batch,
        "lr": plan.lr,
        "lr_per_step": summary.logs.iter().map(|l| l.lr).collect::<Vec<_>>(),
        "weight_decay": plan.weight_decay,
        "warmup": plan.warmup,
        "seed": plan.seed,
        "steps": summary.logs.len(),
        "final_loss": last.map(|l| l.loss),
        "final_logit_scale": last.map(|l| l.logit_scale),
        "inputs": summary.inputs,
        "key": summary.key,
        "out": out,
        "files": files,
        "provenance": crate::report::Provenance::now()
            .ran_on(&plan.device, "f32")
            .with_weights(summary.weights.clone()),
    })
}
