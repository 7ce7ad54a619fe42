//! One backdoored model through every method: the same shots, the same evaluation pass, the
//! same report row. Methods an earlier run finished are taken from it, not run again.

use crate::anatomy::{trigger_push, AnatomyReport, PushSpec};
use crate::attacks::{Perturbation, Trigger};
use crate::data::{k_shot, k_shot_coop, ImageFolder, Loader, TooFew, Transform};
use crate::defences::{
    self, cleanclip::CleanClipConfig, linear_probe::LinearProbeConfig, DefenceContext, MethodSpec,
    Outputs,
};
use crate::engine::{Engine, WeightsUsed};
use crate::error::{Error, Result};
use crate::eval::{
    evaluate_with_resistivity, Attack, Classifier, ImageEncoder, LinearHead, PerturbationResult,
};
use crate::metrics::{AsrConvention, Rate};
use crate::text::{class_text_embeddings_with, Templates};
use crate::train::rvpt::{EpochLog, RvptConfig, ShotSampler};
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One backdoored model to repair.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// Continue a prompt training from its checkpoint (same settings and weights), reuse a
    /// finished CleanCLIP model; off with `--restart`.
    pub resume: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CaseResult {
    pub case: Case,
    pub weights: WeightsUsed,
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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

/// The training and test folders, which must have the same classes; errors name the flag
/// (`--data`, `--test-data`) of the folder at fault.
pub fn open_folders(
    train_dir: &Path,
    test_dir: &Path,
    classnames: Option<&Path>,
) -> Result<(ImageFolder, ImageFolder)> {
    let train = ImageFolder::open(train_dir, classnames)
        .map_err(|e| Error::Invalid(format!("--data: {e}")))?;
    let test = ImageFolder::open(test_dir, classnames)
        .map_err(|e| Error::Invalid(format!("--test-data: {e}")))?;
    if train.classes() != test.classes() {
        return Err(Error::Invalid(format!(
            "--data and --test-data have different classes: {:?} vs {:?}",
            train.classes(),
            test.classes()
        )));
    }
    Ok((train, test))
}

/// The k shots per class of `train` (indices into its samples), by the configured sampler.
pub fn select_shots(train: &ImageFolder, cfg: &RvptConfig) -> Result<Vec<usize>> {
    let (labels, classes) = (train.labels(), train.classes());
    match cfg.sampler {
        ShotSampler::Rvpt => k_shot(&labels, classes, cfg.shots, cfg.seed, TooFew::Error),
        ShotSampler::Coop => k_shot_coop(&labels, classes, cfg.shots, cfg.seed, TooFew::TakeAll),
    }
}

/// Runs every method on one backdoored model (`weights`: its resolved `case.weights`); a
/// method `earlier` has (an earlier run's result
/// of this case, with the same settings and weights) is taken as it is. `on_result` sees the
/// case after each method (the report is rewritten there).
pub fn defend_case(
    case: &Case,
    weights: crate::weights::ResolvedWeights,
    s: &DefendSettings,
    earlier: Option<&CaseResult>,
    on_result: &mut dyn FnMut(&CaseResult) -> Result<()>,
) -> Result<CaseResult> {
    let engine = Engine::from_resolved(weights, &s.device, s.dtype)?;
    let trigger = Trigger::parse(&case.trigger)?;
    engine.weights.check_trigger(&trigger, s.eval_seed)?;
    let size = engine.image_size();
    let (train, test) = open_folders(&s.train_dir, &s.test_dir, s.classnames.as_deref())?;
    let classes = train.classes().to_vec();
    let picks = select_shots(&train, &s.rvpt)?;
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
        resume: s.resume,
    };
    let transfer_sets = s
        .transfer_dirs
        .iter()
        .map(|dir| TransferSet::open(dir, size, s.eval_batch))
        .collect::<Result<Vec<_>>>()?;
    let mut result = CaseResult {
        case: case.clone(),
        weights: engine.weights_used(),
        shots: s.rvpt.shots,
        train_images: samples.len(),
        test_images: test.len(),
        asr_convention: AsrConvention::ExcludeTarget,
        results: Vec::new(),
    };
    let done = match earlier {
        Some(e) if e.weights.sha256 != result.weights.sha256 => {
            return Err(Error::Invalid(format!(
                "the earlier run in {} defended `{}` with sha256 {:?}; these weights have {:?}: \
                 give another --out, or --restart to start over",
                s.out_dir.display(),
                case.weights,
                e.weights.sha256,
                result.weights.sha256
            )))
        }
        Some(e) => e.results.as_slice(),
        None => &[],
    };
    for m in &s.methods {
        if let Some(earlier) = done.iter().find(|r| r.method == m.name) {
            result.results.push(earlier.clone());
            on_result(&result)?;
            continue;
        }
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
        result.results.push(MethodResult {
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
        on_result(&result)?;
    }
    Ok(result)
}
