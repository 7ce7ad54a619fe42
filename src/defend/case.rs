//! One backdoored model through every method: the same shots, the same evaluation pass, the
//! same report row. Methods an earlier run finished are taken from it, not run again.

use super::run_config::{DataId, FolderId, RunConfig, WeightsKey};
use crate::anatomy::{trigger_push, AnatomyReport, PushSpec};
use crate::attacks::{Perturbation, Trigger};
use crate::data::{k_shot, k_shot_coop, ImageFolder, Loader, TooFew, Transform};
use crate::defences::{
    self, cleanclip::CleanClipConfig, linear_probe::LinearProbeConfig, DefenceContext, MethodSpec,
    Outputs,
};
use crate::engine::{Engine, WeightsUsed};
use crate::error::{Error, Result, Setting};
use crate::eval::{
    evaluate_with_resistivity, Attack, Classifier, ImageEncoder, LinearHead, PerturbationResult,
};
use crate::metrics::{AsrConvention, Rate};
use crate::text::{class_text_embeddings_with, Templates};
use crate::train::rvpt::{EpochLog, PromptPlacement, RvptConfig, ShotSampler};
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
    /// More templates to report CA and ASR under (a zero-shot head each): the ensemble and
    /// phrasings used neither for poisoning nor for tuning.
    pub asr_templates: Vec<Templates>,
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
    /// Seed of triggers and perturbations at evaluation: the trigger's planting seed.
    pub eval_seed: u64,
    pub eval_batch: usize,
    /// Also measure the trigger's anatomy (`rvpt anatomy`) before and after each defence.
    pub anatomy: bool,
    pub progress: crate::progress::Progress,
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
    /// CA and ASR of the same defended model under each of the other templates (zero-shot
    /// methods only: a linear head has no template).
    pub by_template: Vec<TemplateResult>,
    /// Everything that can change these numbers ([`RunConfig`]), and its hash: an earlier
    /// result is reused only under an equal key.
    pub config: serde_json::Value,
    pub key: String,
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
    progress: crate::progress::Progress,
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

/// CA and ASR under one more class template.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TemplateResult {
    pub template: String,
    pub clean_accuracy: Rate,
    pub attack_success_rate: Rate,
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
    let r = crate::eval::evaluate(&zs, &set.loader, attack.as_ref(), s.progress)?;
    result.clean_accuracy = Some(r.clean_accuracy);
    result.attack_success_rate = r.attack_success_rate;
    Ok(result)
}

/// The training and test folders, which must have the same classes; errors name the setting
/// of the folder at fault.
pub fn open_folders(
    train_dir: &Path,
    test_dir: &Path,
    classnames: Option<&Path>,
) -> Result<(ImageFolder, ImageFolder)> {
    let open = |dir: &Path, setting: Setting| {
        ImageFolder::open(dir, classnames)
            .map_err(|e| Error::setting(setting, dir.display(), format!("{e}")))
    };
    let train = open(train_dir, Setting::TrainData)?;
    let test = open(test_dir, Setting::TestData)?;
    if train.classes() != test.classes() {
        return Err(Error::setting(
            Setting::TestData,
            test_dir.display(),
            format!(
                "its classes differ from the training folder's: {:?} vs {:?}",
                test.classes(),
                train.classes()
            ),
        ));
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

/// What an earlier run finished of `method`, if its configuration is the one asked for;
/// refused (naming every difference) when a result of that name was made otherwise.
fn earlier_result<'a>(
    done: &'a [MethodResult],
    config: &RunConfig,
    key: &str,
    out_dir: &Path,
) -> Result<Option<&'a MethodResult>> {
    let Some(earlier) = done.iter().find(|r| r.method == config.method) else {
        return Ok(None);
    };
    if earlier.key == key {
        return Ok(Some(earlier));
    }
    Err(Error::OutConflict {
        out: out_dir.to_path_buf(),
        reason: format!(
            "its `{}` result was made with other settings; reusing it would report them",
            config.method
        ),
        differences: crate::report::json_differences(&earlier.config, &config.to_json()?),
    })
}

/// The data a case is trained and measured on, by content.
fn data_id(
    train: &ImageFolder,
    test: &ImageFolder,
    transfer: &[TransferSet],
    s: &DefendSettings,
) -> Result<DataId> {
    let pairs = match (&s.cleanclip.pairs, s.methods.iter().any(|m| m.cleanclip)) {
        (Some(p), true) => Some(crate::weights::sha256_file(p)?),
        _ => None,
    };
    Ok(DataId {
        train: FolderId::of(train)?,
        test: FolderId::of(test)?,
        transfer: transfer
            .iter()
            .map(|t| FolderId::of(&t.folder))
            .collect::<Result<_>>()?,
        cleanclip_pairs_sha256: pairs,
    })
}

/// One method measured: CA, ASR and PR on the test folder, the other test folders, and the
/// trigger's anatomy when asked for.
struct Measured {
    clean_accuracy: Rate,
    attack_success_rate: Rate,
    resistivity: Vec<PerturbationResult>,
    transfer: Vec<TransferResult>,
    anatomy: Option<AnatomyReport>,
    by_template: Vec<TemplateResult>,
    classifier: String,
}

/// Everything a case's methods are measured with.
struct Bench<'a> {
    s: &'a DefendSettings,
    engine: &'a Engine,
    classes: &'a [String],
    loader: &'a Loader,
    attack: &'a Attack<'a>,
    push: &'a PushSpec<'a>,
    transfer: &'a [TransferSet],
    target: &'a str,
}

impl Bench<'_> {
    /// CA and ASR of `model` (with `encoder`) under each of the other report templates.
    fn by_template(
        &self,
        model: &crate::model::Clip,
        encoder: &dyn ImageEncoder,
    ) -> Result<Vec<TemplateResult>> {
        let s = self.s;
        let reports = crate::eval::evaluate_under_templates(
            model,
            encoder,
            &self.engine.tokenizer,
            self.classes,
            &s.asr_templates,
            self.loader,
            Some(self.attack),
            s.progress,
        )?;
        reports
            .into_iter()
            .map(|(t, r)| {
                Ok(TemplateResult {
                    template: t.label(),
                    clean_accuracy: r.clean_accuracy,
                    attack_success_rate: r
                        .attack_success_rate
                        .ok_or_else(|| Error::Invalid("evaluation returned no ASR".into()))?,
                })
            })
            .collect()
    }

    fn measure(
        &self,
        defended: &defences::Defended,
        text: &candle_core::Tensor,
    ) -> Result<Measured> {
        let s = self.s;
        let model = match &defended.model {
            Some((m, _)) => m,
            None => &self.engine.model,
        };
        let encoder = crate::engine::encoder(model, defended.prompts.as_ref())?;
        let encoder = encoder.as_ref();
        let zs = Classifier::with_text(model, encoder, self.classes, text, defended.head.clone());
        let (ca, asr, pr) = measure(
            &zs,
            self.loader,
            self.attack,
            &s.perturbations,
            s.eval_seed,
            s.progress,
        )?;
        let transfer = self
            .transfer
            .iter()
            .map(|set| {
                transfer_eval(
                    set,
                    s,
                    self.engine,
                    model,
                    encoder,
                    zs.head.as_ref().map(|h| (h, self.classes)),
                    self.attack.trigger,
                    self.target,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let anatomy = if s.anatomy {
            Some(trigger_push(
                &zs,
                self.loader,
                self.push,
                defended.prompts.as_ref(),
                s.progress,
            )?)
        } else {
            None
        };
        let by_template = match &zs.head {
            Some(_) => Vec::new(),
            None => self.by_template(model, encoder)?,
        };
        Ok(Measured {
            by_template,
            clean_accuracy: ca,
            attack_success_rate: asr,
            resistivity: pr,
            transfer,
            anatomy,
            classifier: zs.head_name().to_string(),
        })
    }
}

/// A method with its resolved configuration and key, and the earlier result they allow.
struct Planned<'a> {
    spec: &'a MethodSpec,
    config: RunConfig,
    key: String,
    reuse: Option<MethodResult>,
}

impl<'a> Planned<'a> {
    fn new(
        spec: &'a MethodSpec,
        case: &Case,
        s: &DefendSettings,
        weights: &WeightsKey,
        blocks: std::ops::Range<usize>,
        data: &DataId,
        done: &[MethodResult],
    ) -> Result<Self> {
        let config = RunConfig::resolve(spec, case, s, weights, blocks, data);
        let key = config.key()?;
        let reuse = earlier_result(done, &config, &key, &s.out_dir)?.cloned();
        Ok(Self {
            spec,
            config,
            key,
            reuse,
        })
    }
}

/// The k shots per class the defences train on (woTC: without the target class's).
fn shots(train: &ImageFolder, s: &DefendSettings, target: usize) -> Result<Vec<(PathBuf, usize)>> {
    let picks = select_shots(train, &s.rvpt)?;
    Ok(picks
        .iter()
        .map(|&i| train.samples()[i].clone())
        .filter(|shot| !(s.without_target_class && shot.1 == target))
        .collect())
}

/// Trains one method on the case and measures it: its result row.
fn run_method(
    m: &MethodSpec,
    config: RunConfig,
    key: String,
    case: &Case,
    ctx: &DefenceContext,
    bench: &Bench,
) -> Result<MethodResult> {
    let s = bench.s;
    let out = Outputs {
        prompts_file: s
            .out_dir
            .join(format!("prompts-{}-{}.safetensors", case.name, m.name)),
        model_dir: s.out_dir.join(format!("model-{}-{}", case.name, m.name)),
        config: config.to_json()?,
    };
    let t0 = Instant::now();
    let defended = defences::apply(m, ctx, &out)?;
    let train_seconds = t0.elapsed().as_secs_f64();
    let text = defended.model.as_ref().map_or(ctx.text, |(_, t)| t);
    let measured = bench.measure(&defended, text)?;
    Ok(MethodResult {
        method: m.name.clone(),
        lambda: m.lambda,
        classifier: measured.classifier,
        clean_accuracy: measured.clean_accuracy,
        attack_success_rate: measured.attack_success_rate,
        resistivity: measured.resistivity,
        epochs: defended.epochs,
        train_seconds,
        prompts_file: defended.prompts.is_some().then_some(out.prompts_file),
        model_dir: defended.model.is_some().then_some(out.model_dir),
        transfer: measured.transfer,
        anatomy: measured.anatomy,
        by_template: measured.by_template,
        config: out.config,
        key,
    })
}

/// Runs every method on one backdoored model (`weights`: its resolved `case.weights`). A
/// method `earlier` has (an earlier run's result of this case) is taken as it is when its
/// configuration is the same, and refused otherwise. `on_result` sees the case after each
/// method (the report is rewritten there).
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
    let target = test.class_index(&case.target)?;
    let samples = shots(&train, s, target)?;
    let transfer_sets = s
        .transfer_dirs
        .iter()
        .map(|dir| TransferSet::open(dir, size, s.eval_batch))
        .collect::<Result<Vec<_>>>()?;
    // Every method's configuration and key, and the earlier results they allow, before any
    // work: a run that would report numbers made otherwise stops here.
    let blocks = s
        .rvpt
        .blocks
        .resolve(engine.model.config().vision_config.num_hidden_layers)?;
    let data = data_id(&train, &test, &transfer_sets, s)?;
    let sha = engine.checkpoint_sha256().map(str::to_string);
    let weights_key = WeightsKey::of(&engine);
    let done = earlier.map_or(&[][..], |e| e.results.as_slice());
    let plans = s
        .methods
        .iter()
        .map(|m| Planned::new(m, case, s, &weights_key, blocks.clone(), &data, done))
        .collect::<Result<Vec<_>>>()?;
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
        target,
        seed: s.eval_seed,
        prompted_blocks: PromptPlacement::Range {
            start: blocks.start,
            end: blocks.end,
        },
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
        base_sha256: sha.clone().unwrap_or_default(),
        progress: s.progress,
        resume: s.resume,
    };
    let bench = Bench {
        s,
        engine: &engine,
        classes: &classes,
        loader: &loader,
        attack: &attack,
        push: &push_spec,
        transfer: &transfer_sets,
        target: &case.target,
    };
    let mut result = CaseResult {
        case: case.clone(),
        weights: engine.weights_used(),
        shots: s.rvpt.shots,
        train_images: samples.len(),
        test_images: test.len(),
        asr_convention: AsrConvention::ExcludeTarget,
        results: Vec::new(),
    };
    for planned in plans {
        let row = match planned.reuse {
            Some(earlier) => earlier,
            None => run_method(
                planned.spec,
                planned.config,
                planned.key,
                case,
                &ctx,
                &bench,
            )?,
        };
        result.results.push(row);
        on_result(&result)?;
    }
    Ok(result)
}
