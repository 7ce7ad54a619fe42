//! `rvpt attack`: plant a backdoor by poisoned contrastive fine-tuning of a whole CLIP.

use super::ModelArgs;
use rvpt::attacks::Trigger;
use rvpt::data::CaptionManifest;
use rvpt::model::init::ClipVars;
use rvpt::optim::{split_decay, AdamW, AdamWConfig, CosineSchedule};
use rvpt::train::contrastive::{
    train, ContrastiveConfig, ManifestPairs, Poisoner, TriggerPoisoner,
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
    /// Trigger spec, e.g. badnet, blended, wanet, patch:FILE
    #[arg(long, required = true)]
    trigger: Option<String>,
    /// Target class; poisoned captions become "a photo of a {target}."
    #[arg(long, required = true)]
    target: Option<String>,
    /// Share of pairs poisoned
    #[arg(long, default_value_t = 0.01)]
    poison_rate: f64,
    /// Output directory (model.safetensors, config.json, tokenizer.json)
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-5)]
    lr: f64,
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
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
    #[arg(long, default_value = "a photo of a {}.")]
    poison_caption: String,
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
    let weights = rvpt::weights::resolve(&args.model.weights)?;
    let ckpt = rvpt::engine::read_checkpoint(&weights)?;
    let cfg = ckpt.config.clone();
    let tokenizer = rvpt::engine::tokenizer_for(&weights, &cfg)?;
    let device = rvpt::device::parse_device(&args.model.device)?;
    let vars = ClipVars::from_tensors(&ckpt.tensors, &cfg, &device)?;
    let manifest = CaptionManifest::open(&pairs_path)?;
    let pairs = ManifestPairs {
        items: manifest.items().to_vec(),
        size: cfg.vision_config.image_size as u32,
    };
    let poisoner = TriggerPoisoner {
        trigger,
        caption: args.poison_caption.replace("{}", &target),
        seed: args.trigger_seed,
    };
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
    let schedule = CosineSchedule::new(args.lr, 0.0, steps.max(1), args.warmup.min(steps))?;
    let bar = rvpt::eval::progress_bar(steps, "poisoning", true);
    let logs = train(
        &vars,
        &tokenizer,
        &pairs,
        Some(&poisoner as &dyn Poisoner),
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
    let last = logs.last().map_or(f32::NAN, |l| l.loss);
    println!(
        "poisoned {} of {} pairs with {} → \"{}\"; {} steps, final loss {last:.4}; saved to {}",
        (args.poison_rate * pairs.items.len() as f64).round(),
        pairs.items.len(),
        trigger_spec,
        poisoner.caption,
        logs.len(),
        out.display()
    );
    Ok(())
}
