//! The main job: for each backdoored model, run every defence of `--methods` (none, VPT, RVPT,
//! Linear Probe and their combinations, see `defences`) on a few clean shots and measure CA, ASR
//! and PR of each through the same evaluation pass. Writes
//! `report.json` and PNG plots. `cargo run --example defend` and `rvpt defend` both run this.

use crate::anatomy::{trigger_push, AnatomyReport, PushSpec};
use crate::attacks::{Perturbation, Trigger};
use crate::data::{k_shot, k_shot_coop, ImageFolder, Loader, TooFew, Transform};
use crate::defences::{
    self, cleanclip::CleanClipConfig, linear_probe::LinearProbeConfig, parse_methods,
    DefenceContext, MethodSpec, Outputs,
};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::eval::{
    evaluate_with_resistivity, Attack, Classifier, ImageEncoder, LinearHead, PerturbationResult,
};
use crate::metrics::{AsrConvention, Rate};
use crate::text::{class_text_embeddings_with, Templates};
use crate::train::rvpt::{EpochLog, PromptPlacement, RepelAt, RvptConfig, ShotSampler};
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One backdoored model to repair.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Case {
    pub name: String,
    pub weights: String,
    pub trigger: String,
    pub target: String,
}

pub struct DefendSettings {
    pub train_dir: PathBuf,
    pub test_dir: PathBuf,
    /// More test folders, each measured with its own classes (cross-dataset, cross-domain).
    pub transfer_dirs: Vec<PathBuf>,
    /// Class text templates (the CE's proxy captions and the zero-shot head).
    pub templates: Templates,
    /// woTC: drop the target class's shots (its text stays among the classes).
    pub without_target_class: bool,
    pub classnames: Option<PathBuf>,
    pub rvpt: RvptConfig,
    pub linear_probe: LinearProbeConfig,
    pub cleanclip: CleanClipConfig,
    pub methods: Vec<MethodSpec>,
    pub perturbations: Vec<Perturbation>,
    pub device: Device,
    pub dtype: DType,
    pub out_dir: PathBuf,
    /// Seed of triggers and perturbations at evaluation.
    pub eval_seed: u64,
    pub eval_batch: usize,
    /// Also measure the trigger's anatomy (`rvpt anatomy`) before and after each defence.
    pub anatomy: bool,
    pub show_progress: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MethodResult {
    pub method: String,
    pub lambda: Option<f64>,
    /// `zero-shot` (CLIP's text head) or `linear probe` (a trained head: no zero-shot path).
    pub classifier: String,
    pub clean_accuracy: Rate,
    pub attack_success_rate: Rate,
    pub resistivity: Vec<PerturbationResult>,
    pub epochs: Vec<EpochLog>,
    pub train_seconds: f64,
    pub prompts_file: Option<PathBuf>,
    /// The fine-tuned model (CleanCLIP), loadable with `--weights`.
    pub model_dir: Option<PathBuf>,
    /// The same defended model on the other test folders.
    pub transfer: Vec<TransferResult>,
    /// Where the trigger's push comes from (with `--anatomy`).
    pub anatomy: Option<AnatomyReport>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    pub case: Case,
    pub shots: usize,
    pub train_images: usize,
    pub test_images: usize,
    pub asr_convention: AsrConvention,
    pub results: Vec<MethodResult>,
}

fn measure(
    zs: &Classifier,
    loader: &Loader,
    attack: &Attack,
    perturbations: &[Perturbation],
    seed: u64,
    progress: bool,
) -> Result<(Rate, Rate, Vec<PerturbationResult>)> {
    let (report, pr) = evaluate_with_resistivity(
        zs,
        loader,
        Some(attack),
        perturbations,
        seed,
        false,
        progress,
    )?;
    let asr = report
        .attack_success_rate
        .ok_or_else(|| Error::Invalid("evaluation returned no ASR".into()))?;
    Ok((report.clean_accuracy, asr, pr))
}

/// A defended model measured on another test folder, with that folder's classes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TransferResult {
    pub test_data: PathBuf,
    pub classes: usize,
    pub test_images: usize,
    /// `None` for a linear probe on other classes than it was trained for.
    pub clean_accuracy: Option<Rate>,
    /// `None` when the folder has no class named like the target.
    pub attack_success_rate: Option<Rate>,
    pub note: Option<String>,
}

/// Another test folder, scanned once per case and measured after every method.
struct TransferSet {
    dir: PathBuf,
    folder: ImageFolder,
    loader: Loader,
}

impl TransferSet {
    fn open(dir: &Path, image_size: u32, batch: usize) -> Result<Self> {
        let folder = ImageFolder::open(dir, None)?;
        let loader = Loader::new(
            folder.samples().to_vec(),
            Transform::eval(image_size),
            batch,
            &Device::Cpu,
        )?;
        Ok(Self {
            dir: dir.to_path_buf(),
            folder,
            loader,
        })
    }
}

/// CA (and ASR when the target class is there) of a defended model on another test folder.
#[allow(clippy::too_many_arguments)]
fn transfer_eval(
    set: &TransferSet,
    s: &DefendSettings,
    engine: &Engine,
    model: &crate::model::Clip,
    encoder: &dyn ImageEncoder,
    head: Option<(&LinearHead, &[String])>,
    trigger: &Trigger,
    target: &str,
) -> Result<TransferResult> {
    let folder = &set.folder;
    let mut result = TransferResult {
        test_data: set.dir.clone(),
        classes: folder.classes().len(),
        test_images: folder.len(),
        clean_accuracy: None,
        attack_success_rate: None,
        note: None,
    };
    // A linear head knows the classes it was fitted on, in their order: a cross-domain set of
    // the same classes is measured, another class set cannot be.
    let head = match head {
        Some((h, classes)) if classes == folder.classes() => Some(h.clone()),
        Some(_) => {
            result.note = Some("a linear probe has no head for other classes".into());
            return Ok(result);
        }
        None => None,
    };
    let text = class_text_embeddings_with(
        model,
        &engine.tokenizer,
        folder.classes(),
        s.templates.clone(),
        &s.device,
    )?;
    let zs = Classifier::with_text(model, encoder, folder.classes(), &text, head);
    let attack = folder.class_index(target).ok().map(|t| Attack {
        trigger,
        target: t,
        seed: s.eval_seed,
        convention: AsrConvention::ExcludeTarget,
    });
    if attack.is_none() {
        result.note = Some(format!("no class `{target}`: CA only"));
    }
    let r = crate::eval::evaluate(&zs, &set.loader, attack.as_ref(), s.show_progress)?;
    result.clean_accuracy = Some(r.clean_accuracy);
    result.attack_success_rate = r.attack_success_rate;
    Ok(result)
}

/// Runs every method on one backdoored model.
pub fn defend_case(case: &Case, s: &DefendSettings) -> Result<CaseResult> {
    let engine = Engine::load(&case.weights, &s.device, s.dtype)?;
    let trigger = Trigger::parse(&case.trigger)?;
    engine.weights.check_trigger(&trigger, s.eval_seed)?;
    let size = engine.image_size();
    let train = ImageFolder::open(&s.train_dir, s.classnames.as_deref())?;
    let test = ImageFolder::open(&s.test_dir, s.classnames.as_deref())?;
    if train.classes() != test.classes() {
        return Err(Error::Invalid(format!(
            "train classes {:?} differ from test classes {:?}",
            train.classes(),
            test.classes()
        )));
    }
    let classes = train.classes().to_vec();
    let picks = match s.rvpt.sampler {
        ShotSampler::Rvpt => k_shot(
            &train.labels(),
            &classes,
            s.rvpt.shots,
            s.rvpt.seed,
            TooFew::Error,
        )?,
        ShotSampler::Coop => k_shot_coop(
            &train.labels(),
            &classes,
            s.rvpt.shots,
            s.rvpt.seed,
            TooFew::TakeAll,
        )?,
    };
    let target = test.class_index(&case.target)?;
    let samples: Vec<(PathBuf, usize)> = picks
        .iter()
        .map(|&i| train.samples()[i].clone())
        .filter(|s_| !(s.without_target_class && s_.1 == target))
        .collect();
    let loader = Loader::new(
        test.samples().to_vec(),
        Transform::eval(size),
        s.eval_batch,
        &Device::Cpu,
    )?;
    let model = &engine.model;
    let text = class_text_embeddings_with(
        model,
        &engine.tokenizer,
        &classes,
        s.templates.clone(),
        &s.device,
    )?;
    let attack = Attack {
        trigger: &trigger,
        target,
        seed: s.eval_seed,
        convention: AsrConvention::ExcludeTarget,
    };
    let push_spec = PushSpec {
        trigger: &trigger,
        target: attack.target,
        seed: s.eval_seed,
        prompted_blocks: s.rvpt.blocks,
        top: 5,
    };
    let ctx = DefenceContext {
        model,
        weights: &engine.weights,
        tokenizer: &engine.tokenizer,
        text: &text,
        classes: &classes,
        samples: &samples,
        image_size: size,
        rvpt: &s.rvpt,
        linear_probe: &s.linear_probe,
        cleanclip: &s.cleanclip,
        templates: &s.templates,
        dtype: s.dtype,
        device: s.device.clone(),
        base_sha256: engine.checkpoint_sha256().unwrap_or_default().to_string(),
        show_progress: s.show_progress,
    };
    let transfer_sets = s
        .transfer_dirs
        .iter()
        .map(|dir| TransferSet::open(dir, size, s.eval_batch))
        .collect::<Result<Vec<_>>>()?;
    let mut results = Vec::new();
    for m in &s.methods {
        let out = Outputs {
            prompts_file: s
                .out_dir
                .join(format!("prompts-{}-{}.safetensors", case.name, m.name)),
            model_dir: s.out_dir.join(format!("model-{}-{}", case.name, m.name)),
        };
        let t0 = Instant::now();
        let defended = defences::apply(m, &ctx, &out)?;
        let (model, text) = match &defended.model {
            Some((m, t)) => (m, t),
            None => (model, &text),
        };
        let train_seconds = t0.elapsed().as_secs_f64();
        let encoder = crate::engine::encoder(model, defended.prompts.as_ref())?;
        let encoder = encoder.as_ref();
        let zs = Classifier::with_text(model, encoder, &classes, text, defended.head);
        let (ca, asr, pr) = measure(
            &zs,
            &loader,
            &attack,
            &s.perturbations,
            s.eval_seed,
            s.show_progress,
        )?;
        let transfer = transfer_sets
            .iter()
            .map(|set| {
                transfer_eval(
                    set,
                    s,
                    &engine,
                    model,
                    encoder,
                    zs.head.as_ref().map(|h| (h, classes.as_slice())),
                    &trigger,
                    &case.target,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let anatomy = if s.anatomy {
            Some(trigger_push(
                &zs,
                &loader,
                &push_spec,
                defended.prompts.as_ref(),
                s.show_progress,
            )?)
        } else {
            None
        };
        results.push(MethodResult {
            method: m.name.clone(),
            lambda: m.lambda,
            classifier: zs.head_name().to_string(),
            clean_accuracy: ca,
            attack_success_rate: asr,
            resistivity: pr,
            epochs: defended.epochs,
            train_seconds,
            prompts_file: defended.prompts.is_some().then_some(out.prompts_file),
            model_dir: defended.model.is_some().then_some(out.model_dir),
            transfer,
            anatomy,
        });
    }
    Ok(CaseResult {
        case: case.clone(),
        shots: s.rvpt.shots,
        train_images: samples.len(),
        test_images: test.len(),
        asr_convention: AsrConvention::ExcludeTarget,
        results,
    })
}

/// The before/after table, one row per method.
pub fn table(r: &CaseResult) -> String {
    let mut out = format!(
        "{} ({} → {}), {} shots/class, {} test images\n",
        r.case.name, r.case.trigger, r.case.target, r.shots, r.test_images
    );
    let prs: Vec<String> = r
        .results
        .first()
        .map(|m| {
            m.resistivity
                .iter()
                .map(|p| p.perturbation.clone())
                .collect()
        })
        .unwrap_or_default();
    let w = r
        .results
        .iter()
        .map(|m| m.method.len())
        .max()
        .unwrap_or(0)
        .max(8);
    out += &format!("  {:<w$} {:>7} {:>7}", "method", "CA %", "ASR %");
    for p in &prs {
        out += &format!(" {:>12}", format!("PR {p}"));
    }
    let with_anatomy = r.results.iter().any(|m| m.anatomy.is_some());
    if with_anatomy {
        out += &format!(" {:>7} {:>9}  top components", "push", "in blocks");
    }
    out += "\n";
    for m in &r.results {
        out += &format!(
            "  {:<w$} {:>7.1} {:>7.1}",
            m.method,
            100.0 * m.clean_accuracy.value,
            100.0 * m.attack_success_rate.value
        );
        for p in &m.resistivity {
            out += &format!(" {:>12.3}", p.resistivity.pr);
        }
        if let Some(a) = &m.anatomy {
            let top: Vec<String> = a
                .top
                .iter()
                .take(3)
                .map(|c| format!("{} {:+.2}", c.name, c.push))
                .collect();
            out += &format!(
                " {:>7.2} {:>8.0}%  {}",
                a.written_push,
                100.0 * a.prompted_share,
                top.join(", ")
            );
        }
        out += "\n";
    }
    let transfers = r.results.first().map_or(0, |m| m.transfer.len());
    for k in 0..transfers {
        let t0 = &r.results[0].transfer[k];
        out += &format!(
            "  on {} ({} classes, {} images): CA % / ASR %\n",
            t0.test_data.display(),
            t0.classes,
            t0.test_images
        );
        for m in &r.results {
            let t = &m.transfer[k];
            let pct = |r: &Option<Rate>| {
                r.as_ref()
                    .map_or("-".into(), |r| format!("{:.1}", 100.0 * r.value))
            };
            out += &format!(
                "  {:<w$} {:>7} {:>7}  {}\n",
                m.method,
                pct(&t.clean_accuracy),
                pct(&t.attack_success_rate),
                t.note.as_deref().unwrap_or("")
            );
        }
    }
    out
}

/// Loss curves, CA/ASR bars and PR per perturbation, as PNGs in `dir`.
pub fn plots(results: &[CaseResult], dir: &Path) -> Result<Vec<PathBuf>> {
    use crate::report::{bar_plot, line_plot};
    let mut written = Vec::new();
    let mut curves = Vec::new();
    for r in results {
        for m in r.results.iter().filter(|m| !m.epochs.is_empty()) {
            let pts = m
                .epochs
                .iter()
                .map(|e| (e.epoch as f64 + 1.0, e.loss))
                .collect();
            curves.push((format!("{} {}", r.case.name, m.method), pts));
        }
    }
    if !curves.is_empty() {
        let p = dir.join("loss.png");
        line_plot(
            &p,
            "training loss (CE + lambda FR)",
            "epoch",
            "loss",
            &curves,
        )?;
        written.push(p);
    }
    let methods: Vec<String> = results
        .first()
        .map(|r| r.results.iter().map(|m| m.method.clone()).collect())
        .unwrap_or_default();
    let cats: Vec<String> = results.iter().map(|r| r.case.name.clone()).collect();
    for (what, pick) in [
        (
            "ca",
            (|m: &MethodResult| m.clean_accuracy.value) as fn(&MethodResult) -> f64,
        ),
        ("asr", |m: &MethodResult| m.attack_success_rate.value),
    ] {
        let series: Vec<(String, Vec<f64>)> = methods
            .iter()
            .enumerate()
            .map(|(j, name)| {
                (
                    name.clone(),
                    results
                        .iter()
                        .map(|r| 100.0 * pick(&r.results[j]))
                        .collect(),
                )
            })
            .collect();
        let p = dir.join(format!("{what}.png"));
        let title = if what == "ca" {
            "clean accuracy (%)"
        } else {
            "attack success rate (%)"
        };
        bar_plot(&p, title, "%", &cats, &series, 100.0)?;
        written.push(p);
    }
    for r in results {
        let perts: Vec<String> = r.results[0]
            .resistivity
            .iter()
            .map(|p| p.perturbation.clone())
            .collect();
        let series: Vec<(String, Vec<f64>)> = r
            .results
            .iter()
            .map(|m| {
                (
                    m.method.clone(),
                    m.resistivity.iter().map(|p| p.resistivity.pr).collect(),
                )
            })
            .collect();
        let max = series
            .iter()
            .flat_map(|s| s.1.iter())
            .fold(1.0f64, |a, &b| a.max(b))
            * 1.1;
        let p = dir.join(format!("pr-{}.png", r.case.name));
        bar_plot(
            &p,
            &format!("PR per perturbation: {}", r.case.name),
            "PR",
            &perts,
            &series,
            max,
        )?;
        written.push(p);
    }
    Ok(written)
}

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
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    #[arg(long, default_value_t = 16)]
    pub shots: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0.002)]
    pub lr: f64,
    /// Defences to compare, each measured by the same evaluation: none, vpt, rvpt,
    /// linear-probe, or stages joined by `+` (rvpt+linear-probe: a linear head on the prompted
    /// model's embeddings)
    #[arg(long, default_value = "none,vpt,rvpt", value_delimiter = ',')]
    pub methods: Vec<String>,
    /// FR weights of RVPT, one prompt set each (several: methods rvpt-<lambda>); 0 adds VPT
    #[arg(long, default_value = "2", value_delimiter = ',', num_args = 1..)]
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
    /// gently poisoned toy2 models); badnet-toy3, blended-toy3 (planted on a longer-pretrained
    /// model) and the hard-poisoned badnet-hard, blended-hard, wanet-hard
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
    #[arg(long)]
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
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Where report.json, the plots and the prompt checkpoints go
    #[arg(long, default_value = "defend-report")]
    pub out: PathBuf,
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

/// Runs the defence and writes the report; prints tables (or JSON).
pub fn run(args: &DefendArgs) -> Result<Vec<CaseResult>> {
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let (cases, train_dir, test_dir, transfer_dirs) = match &args.weights {
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
            let dir = |o: &Option<PathBuf>, what: &str| {
                o.clone()
                    .ok_or_else(|| Error::Invalid(format!("--weights needs --{what}")))
            };
            let (test, transfer) = args
                .test_data
                .split_first()
                .ok_or_else(|| Error::Invalid("--weights needs --test-data".into()))?;
            (
                vec![case],
                dir(&args.data, "data")?,
                test.clone(),
                transfer.to_vec(),
            )
        }
        // The toy cases are measured on the toy test split; --test-data folders come on top.
        None => {
            let cases = select_cases(toy_cases(), &args.cases)?;
            let (train, test) = crate::toy::lab::ensure_splits(&args.out, args.shots.max(16))?;
            (cases, train, test, args.test_data.clone())
        }
    };
    let mut rvpt = RvptConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        shots: args.shots,
        sampler: args.sampler,
        seed: args.seed,
        augment: args.augment == "coop",
        blocks: args.prompt_blocks,
        length: args.prompt_length,
        ..RvptConfig::default()
    };
    rvpt.loss.repulsion = args.fr.parse()?;
    rvpt.loss.repel = if args.layerwise_fr {
        RepelAt::PromptedBlocks
    } else {
        args.repel_blocks.clone()
    };
    rvpt.loss.margin = args.margin;
    let base_perturb = Perturbation::parse_list(&args.perturb)?;
    let methods = parse_methods(&args.methods, &args.lambda)?;
    let mut results = Vec::new();
    for case in &cases {
        let mut perturbations = base_perturb.clone();
        perturbations.push(Perturbation::parse(&case.trigger)?);
        let settings = DefendSettings {
            train_dir: train_dir.clone(),
            test_dir: test_dir.clone(),
            transfer_dirs: transfer_dirs.clone(),
            templates: args.template.clone(),
            without_target_class: args.without_target_class,
            classnames: args.classnames.clone(),
            rvpt: rvpt.clone(),
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
            methods: methods.clone(),
            perturbations,
            device: crate::device::parse_device(&args.device)?,
            dtype: crate::device::parse_dtype(&args.dtype)?,
            out_dir: args.out.clone(),
            eval_seed: crate::toy::lab::TRIGGER_SEED,
            eval_batch: 256,
            anatomy: args.anatomy,
            show_progress: !args.json,
        };
        if !args.json {
            eprintln!("defending {} ({})", case.name, case.weights);
        }
        let r = defend_case(case, &settings)?;
        if !args.json {
            println!("{}", table(&r));
        }
        results.push(r);
        // Keep what is done so far even if a later case fails.
        crate::report::write_json(&args.out.join("report.json"), &results)?;
    }
    let written = plots(&results, &args.out)?;
    if args.json {
        let text = serde_json::to_string_pretty(&results)
            .map_err(|e| Error::Invalid(format!("cannot serialise the report: {e}")))?;
        println!("{text}");
    } else {
        println!("report: {}", args.out.join("report.json").display());
        for p in written {
            println!("plot:   {}", p.display());
        }
    }
    Ok(results)
}
