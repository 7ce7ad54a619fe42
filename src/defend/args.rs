//! The command line of `rvpt defend` and `cargo run --example defend`, and the plan it
//! makes: every setting checked (flags named, ranges given) before anything is created.

use super::case::{open_folders, select_shots, Case, DefendSettings};
use crate::attacks::{Perturbation, Trigger};
use crate::data::ImageFolder;
use crate::defences::{cleanclip::CleanClipConfig, linear_probe::LinearProbeConfig, parse_methods};
use crate::error::{Error, Result};
use crate::text::Templates;
use crate::train::rvpt::{PromptPlacement, RepelAt, RvptConfig, ShotSampler};
use std::path::PathBuf;

/// Command-line options of `rvpt defend` and `cargo run --example defend`.
#[derive(clap::Args, Debug, Clone)]
pub struct DefendArgs {
    /// Backdoored weights (entry, repo id, directory or file); default: the three embedded toy models
    #[arg(long, requires_all = ["data", "test_data", "trigger", "target"])]
    pub weights: Option<String>,
    /// Training image folder (one sub-folder per class); k shots per class are drawn from it
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Test image folder with the same classes; more folders after a comma are measured too,
    /// each with its own classes (cross-dataset, cross-domain: tune once, evaluate on several)
    #[arg(long, value_delimiter = ',')]
    pub test_data: Vec<PathBuf>,
    /// Class names file for both folders
    #[arg(long)]
    pub classnames: Option<PathBuf>,
    /// The backdoor's trigger spec (for ASR and PR)
    #[arg(long)]
    pub trigger: Option<String>,
    /// The backdoor's target class
    #[arg(long)]
    pub target: Option<String>,
    /// woTC: drop the target class's shots (an emerging target class the defender has no
    /// images of); its text stays among the classes
    #[arg(long)]
    pub without_target_class: bool,
    /// Class text template: single ("a photo of a {}."), openai80, pets ("a photo of a {}, a
    /// type of pet."), or any text with one {} for the class name
    #[arg(long, default_value = "single", value_parser = Templates::parse)]
    pub template: Templates,
    /// Prompt training epochs (≥ 1)
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// Clean training images per class (≥ 1)
    #[arg(long, default_value_t = 16)]
    pub shots: usize,
    /// Prompt training batch size (≥ 1)
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Prompt learning rate (SGD, momentum 0.9, weight decay 5e-4, cosine schedule)
    #[arg(long, default_value_t = 0.002)]
    pub lr: f64,
    /// Defences to compare, each measured by the same evaluation: none, vpt, rvpt,
    /// linear-probe, or stages joined by `+` (rvpt+linear-probe: a linear head on the prompted
    /// model's embeddings)
    #[arg(long, default_value = "none,vpt,rvpt", value_delimiter = ',')]
    pub methods: Vec<String>,
    /// FR weights of RVPT, one prompt set each (several: methods rvpt-<lambda>); 0 adds VPT
    #[arg(
        long,
        default_value = "2",
        value_delimiter = ',',
        num_args = 1..,
        allow_negative_numbers = true
    )]
    pub lambda: Vec<f64>,
    /// CleanCLIP: learning rate of AdamW (the paper's 5e-6 is for real CLIP; 3e-6 for WaNet)
    #[arg(long, default_value_t = 5e-6)]
    pub cleanclip_lr: f64,
    /// CleanCLIP: epochs (batch 64)
    #[arg(long, default_value_t = 10)]
    pub cleanclip_epochs: usize,
    /// CleanCLIP: a CSV of clean `path,caption` pairs to fine-tune on [default: the k shots,
    /// captioned by the training folder's captions.csv or "a photo of a {class}."]
    #[arg(long)]
    pub cleanclip_pairs: Option<PathBuf>,
    /// Linear Probe: epochs of SGD (lr 0.01, momentum 0.9, batch 32, constant lr, as in the paper)
    #[arg(long, default_value_t = 40)]
    pub probe_epochs: usize,
    /// Which embedded toy backdoors to repair: names, or `all` [default: badnet, blended (the
    /// gently poisoned toy2 models); badnet-toy3, blended-toy3, wanet-toy3 (planted on a
    /// longer-pretrained model) and the hard-poisoned badnet-hard, blended-hard, wanet-hard
    /// and badnet-late6 on request]
    #[arg(long, value_delimiter = ',', conflicts_with = "weights")]
    pub cases: Vec<String>,
    /// Prompt tokens per block
    #[arg(long, default_value_t = 50)]
    pub prompt_length: usize,
    /// Which blocks get prompts: N (the last N) or a range counted from the input, a..b (b
    /// excluded) or a..=b; above the last prompted block the prompt outputs are carried along
    #[arg(long = "prompt-blocks", alias = "prompted-blocks", default_value = "6")]
    pub prompt_blocks: PromptPlacement,
    /// coop (random resized crop + flip) or none (enables the frozen-prefix cache)
    #[arg(long, default_value = "coop", value_parser = ["coop", "none"])]
    pub augment: String,
    /// The smallest area share of --augment coop's random crops, in (0, 1] [default: 0.08, as
    /// CoOp and torchvision]; larger keeps more of a small image
    #[arg(long)]
    pub crop_scale: Option<f64>,
    /// FR measure: cosine, l1 or l2
    #[arg(long, default_value = "cosine")]
    pub fr: String,
    /// FR on the [CLS] token at every prompted block (the same as --repel-blocks prompted)
    #[arg(long, conflicts_with = "repel_blocks")]
    pub layerwise_fr: bool,
    /// Where FR repels the prompted encoder from the frozen one: final (the pooled feature),
    /// prompted (the [CLS] token after every prompted block), or the [CLS] token after the
    /// blocks given as a range a..b / a..=b or a list 6,8,10 (at or above the first prompted
    /// block), independent of --prompt-blocks
    #[arg(long, default_value = "final")]
    pub repel_blocks: RepelAt,
    /// Margin variant of FR: max(FR_i, margin)
    #[arg(long, allow_negative_numbers = true)]
    pub margin: Option<f64>,
    /// Seed of the shots, the prompts' initialisation and the batch order
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// How the shots are drawn: rvpt, or coop (Python's `random` as CoOp seeds it: the same
    /// shots as CoOp for the same --seed on a CoOp split file; CoOp's seeds are 1, 2, 3)
    #[arg(long, default_value = "rvpt")]
    pub sampler: ShotSampler,
    /// Perturbations for PR; the case's trigger is added
    #[arg(long, default_value = "noise:0.03,blur:3,flip")]
    pub perturb: String,
    /// cpu, cuda[:N] or metal[:N]
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Where report.json, the plots and the prompt checkpoints go. A run started again on the
    /// same --out with the same settings keeps what the first one finished and resumes an
    /// unfinished prompt training from its checkpoint; another run using it is refused
    #[arg(long, default_value = "defend-report")]
    pub out: PathBuf,
    /// Start over in --out: ignore (and overwrite) an earlier run's results and checkpoints
    #[arg(long)]
    pub restart: bool,
    /// Print report.json on stdout instead of tables
    #[arg(long)]
    pub json: bool,
    /// Also measure where the trigger's push comes from (`rvpt anatomy`) before and after each
    /// defence: the heads' and MLPs' push towards the target and the share of the prompted blocks
    #[arg(long)]
    pub anatomy: bool,
}

/// The embedded demo's cases (`toy::lab::TOY_CASES`), with whether each runs by default.
pub fn toy_cases() -> Vec<(Case, bool)> {
    crate::toy::lab::TOY_CASES
        .iter()
        .map(|c| {
            let case = Case {
                name: c.name.to_string(),
                weights: c.weights.to_string(),
                trigger: c.trigger.to_string(),
                target: crate::toy::lab::TARGET.to_string(),
            };
            (case, c.default)
        })
        .collect()
}

/// The named cases, in the order given; `all` is every case; no names, the default ones.
fn select_cases(all: Vec<(Case, bool)>, names: &[String]) -> Result<Vec<Case>> {
    if names.is_empty() {
        return Ok(all.into_iter().filter(|c| c.1).map(|c| c.0).collect());
    }
    if names.len() == 1 && names[0] == "all" {
        return Ok(all.into_iter().map(|c| c.0).collect());
    }
    names
        .iter()
        .map(|n| {
            all.iter()
                .find(|c| &c.0.name == n)
                .map(|c| c.0.clone())
                .ok_or_else(|| {
                    let known: Vec<&str> = all.iter().map(|c| c.0.name.as_str()).collect();
                    Error::Invalid(format!(
                        "unknown case `{n}`: expected `all` or one of {known:?}"
                    ))
                })
        })
        .collect()
}

/// A checked run: the cases and the settings they share (each case adds its trigger to the
/// perturbations), and the settings as JSON (what a resumed run must match).
pub struct Plan {
    pub cases: Vec<Case>,
    /// The weights of each case, resolved and checked.
    pub weights: Vec<crate::weights::ResolvedWeights>,
    pub settings: DefendSettings,
    /// The embedded toy cases: their train and test splits are made in `--out`.
    pub toy: bool,
    pub fingerprint: serde_json::Value,
}

fn at_least_one(flag: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::Invalid(format!("{flag} 0: must be at least 1")));
    }
    Ok(())
}

fn positive(flag: &str, value: f64) -> Result<()> {
    if !(value.is_finite() && value > 0.0) {
        return Err(Error::Invalid(format!(
            "{flag} {value}: must be a finite number above 0"
        )));
    }
    Ok(())
}

/// `--crop-scale`, checked: in (0, 1], and only where there are crops.
fn crop_scale(args: &DefendArgs) -> Result<f64> {
    let Some(scale) = args.crop_scale else {
        return Ok(crate::image::COOP_CROP_SCALE);
    };
    if args.augment != "coop" {
        return Err(Error::Invalid(format!(
            "--crop-scale {scale}: only with --augment coop (--augment {} makes no crops)",
            args.augment
        )));
    }
    if !crate::image::is_crop_scale(scale) {
        return Err(Error::Invalid(format!(
            "--crop-scale {scale}: must be above 0 and at most 1 (a share of the image's area)"
        )));
    }
    Ok(scale)
}

/// Checks every setting and input of `args` before anything is created: numbers in range,
/// specs that parse, folders that open with the same classes, the target among them, enough
/// images for the shots and every shot decodable, prompt and repel blocks that fit each model.
pub fn plan(args: &DefendArgs) -> Result<Plan> {
    at_least_one("--epochs", args.epochs)?;
    at_least_one("--shots", args.shots)?;
    at_least_one("--batch-size", args.batch_size)?;
    at_least_one("--prompt-length", args.prompt_length)?;
    at_least_one("--probe-epochs", args.probe_epochs)?;
    at_least_one("--cleanclip-epochs", args.cleanclip_epochs)?;
    positive("--lr", args.lr)?;
    positive("--cleanclip-lr", args.cleanclip_lr)?;
    if let Some(m) = args.margin {
        if !m.is_finite() {
            return Err(Error::Invalid(format!("--margin {m}: must be finite")));
        }
    }
    let device = crate::device::parse_device(&args.device)?;
    let dtype = crate::device::parse_dtype(&args.dtype)?;
    let methods = parse_methods(&args.methods, &args.lambda)?;
    let perturbations = Perturbation::parse_list(&args.perturb)
        .map_err(|e| Error::Invalid(format!("--perturb: {e}")))?;
    let mut rvpt = RvptConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        shots: args.shots,
        sampler: args.sampler,
        seed: args.seed,
        augment: args.augment == "coop",
        crop_scale: crop_scale(args)?,
        blocks: args.prompt_blocks,
        length: args.prompt_length,
        ..RvptConfig::default()
    };
    rvpt.loss.repulsion = args
        .fr
        .parse()
        .map_err(|e| Error::Invalid(format!("--fr: {e}")))?;
    rvpt.loss.repel = if args.layerwise_fr {
        RepelAt::PromptedBlocks
    } else {
        args.repel_blocks.clone()
    };
    rvpt.loss.margin = args.margin;

    let (cases, toy) = match &args.weights {
        Some(w) => {
            let need = |o: &Option<String>, what: &str| {
                o.clone()
                    .ok_or_else(|| Error::Invalid(format!("--weights needs --{what}")))
            };
            let case = Case {
                name: "model".into(),
                weights: w.clone(),
                trigger: need(&args.trigger, "trigger")?,
                target: need(&args.target, "target")?,
            };
            (vec![case], false)
        }
        None => (select_cases(toy_cases(), &args.cases)?, true),
    };
    // Each case's weights, resolved (and checksummed) once, here: `run` loads them as they are.
    let mut weights = Vec::with_capacity(cases.len());
    for case in &cases {
        Trigger::parse(&case.trigger).map_err(|e| Error::Invalid(format!("--trigger: {e}")))?;
        let resolved = crate::weights::resolve(&case.weights)?;
        // The blocks must fit each model (its config, without building it).
        let layers = crate::engine::read_config(&resolved)?
            .vision_config
            .num_hidden_layers;
        let blocks = rvpt.blocks.resolve(layers)?;
        rvpt.loss.repel.resolve(blocks, layers)?;
        weights.push(resolved);
    }
    let (train_dir, test_dir, transfer_dirs) = if toy {
        // Made in --out once it is locked (`run`); the toy world has every class.
        let train = args.out.join(format!("toy-train-{}", args.shots.max(16)));
        (train, args.out.join("toy-test"), args.test_data.clone())
    } else {
        let train = args
            .data
            .clone()
            .ok_or_else(|| Error::Invalid("--weights needs --data".into()))?;
        let (test, transfer) = args
            .test_data
            .split_first()
            .ok_or_else(|| Error::Invalid("--weights needs --test-data".into()))?;
        check_folders(args, &rvpt, &train, test, &cases[0].target)?;
        (train, test.clone(), transfer.to_vec())
    };
    for dir in &transfer_dirs {
        ImageFolder::open(dir, None).map_err(|e| Error::Invalid(format!("--test-data: {e}")))?;
    }
    if methods.iter().any(|m| m.cleanclip) {
        if let Some(pairs) = &args.cleanclip_pairs {
            if !pairs.is_file() {
                return Err(Error::Invalid(format!(
                    "--cleanclip-pairs {}: no such file",
                    pairs.display()
                )));
            }
        }
    }
    let settings = DefendSettings {
        train_dir,
        test_dir,
        transfer_dirs,
        templates: args.template.clone(),
        without_target_class: args.without_target_class,
        classnames: args.classnames.clone(),
        rvpt,
        linear_probe: LinearProbeConfig {
            epochs: args.probe_epochs,
            seed: args.seed,
            ..LinearProbeConfig::default()
        },
        cleanclip: CleanClipConfig {
            epochs: args.cleanclip_epochs,
            lr: args.cleanclip_lr,
            seed: args.seed,
            pairs: args.cleanclip_pairs.clone(),
            ..CleanClipConfig::default()
        },
        methods,
        perturbations,
        device,
        dtype,
        out_dir: args.out.clone(),
        eval_seed: crate::toy::lab::TRIGGER_SEED,
        eval_batch: 256,
        anatomy: args.anatomy,
        show_progress: !args.json,
        resume: !args.restart,
    };
    let fingerprint = fingerprint(&settings);
    Ok(Plan {
        cases,
        weights,
        settings,
        toy,
        fingerprint,
    })
}

/// The training and test folders of `--weights`: they open, have the same classes, hold the
/// target, have enough images for the shots, and every shot decodes.
fn check_folders(
    args: &DefendArgs,
    rvpt: &RvptConfig,
    train_dir: &std::path::Path,
    test_dir: &std::path::Path,
    target: &str,
) -> Result<()> {
    let (train, test) = open_folders(train_dir, test_dir, args.classnames.as_deref())?;
    test.class_index(target)
        .map_err(|e| Error::Invalid(format!("--target: {e}")))?;
    let picks = select_shots(&train, rvpt).map_err(|e| Error::Invalid(format!("--shots: {e}")))?;
    use rayon::prelude::*;
    picks.par_iter().try_for_each(|&i| {
        let path = &train.samples()[i].0;
        crate::image::load_rgb(path).map(|_| ())
    })?;
    Ok(())
}

/// Every setting that shapes the results, as JSON.
fn fingerprint(s: &DefendSettings) -> serde_json::Value {
    // Not the methods: a later run may add some; results are kept per method.
    let perturbations: Vec<String> = s.perturbations.iter().map(|p| p.name()).collect();
    serde_json::json!({
        "train_data": s.train_dir,
        "test_data": s.test_dir,
        "transfer_data": s.transfer_dirs,
        "classnames": s.classnames,
        "template": s.templates,
        "without_target_class": s.without_target_class,
        "rvpt": s.rvpt,
        "linear_probe": s.linear_probe,
        "cleanclip": s.cleanclip,
        "perturbations": perturbations,
        "dtype": format!("{:?}", s.dtype).to_lowercase(),
        "eval_seed": s.eval_seed,
        "anatomy": s.anatomy,
    })
}
