//! The plan of a `defend` run: every setting, typed, in one serialisable value, checked once
//! before anything is created (ranges, specs, folders, the blocks against each model). Each
//! method's result is then tied to its fully resolved configuration ([`RunConfig`]), whose hash
//! decides whether an earlier result may be reused.

use super::case::{open_folders, select_shots, Case, DefendSettings};
use crate::attacks::{Perturbation, Trigger};
use crate::data::ImageFolder;
use crate::defences::{cleanclip::CleanClipConfig, linear_probe::LinearProbeConfig, parse_methods};
use crate::error::{Error, Result, Setting};
use crate::text::Templates;
use crate::train::rvpt::{PromptPlacement, RepelAt, RvptConfig, ShotSampler};
use std::path::PathBuf;

/// Which backdoored models to repair.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Models {
    /// Embedded toy cases by name; empty: the default ones; `all`: every one. Their train and
    /// test splits are made in the output folder.
    Toy(Vec<String>),
    /// One model, with the folders its shots and test images come from.
    Given {
        weights: String,
        train: Option<PathBuf>,
        test: Option<PathBuf>,
        trigger: Option<String>,
        target: Option<String>,
    },
}

/// The smallest crop of the toy cases' prompt training, as a share of the image's area: chosen
/// by measurement on toy3-badnet-own over three seeds (docs/results.md, "Which augmentation
/// suits the toy"): it lowers RVPT's ASR by ~19 points against no augmentation for ~2 CA points,
/// where CoOp's 0.08 costs ~9.
pub const TOY_CROP_SCALE: f64 = 0.5;

/// Everything a `defend` run is asked to do, as the user gave it (no flag names: `src/cli`
/// fills it). [`DefendPlan::check`] resolves it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DefendPlan {
    pub models: Models,
    /// More test folders, each measured with its own classes.
    pub transfer: Vec<PathBuf>,
    pub classnames: Option<PathBuf>,
    pub templates: Templates,
    /// More templates to report CA and ASR under, `|`-separated; `None`: the held-out set that
    /// suits the models (the toy phrasings for the toy cases, the ensemble and two phrasings
    /// outside OpenAI's 80 for a given model).
    pub asr_templates: Option<String>,
    pub without_target_class: bool,
    /// Method names (stages joined by `+`) and the FR weights of `rvpt`.
    pub methods: Vec<String>,
    pub lambdas: Vec<f64>,
    pub epochs: usize,
    pub shots: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    pub sampler: ShotSampler,
    pub prompt_length: usize,
    pub prompt_blocks: PromptPlacement,
    /// CoOp's random resized crops and flips; without, the frozen prefix is cached.
    pub augment: bool,
    pub crop_scale: Option<f64>,
    pub repulsion: String,
    pub repel: RepelAt,
    pub margin: Option<f64>,
    pub cleanclip_lr: f64,
    pub cleanclip_epochs: usize,
    pub cleanclip_pairs: Option<PathBuf>,
    pub probe_epochs: usize,
    /// Perturbations for PR (the case's trigger is added).
    pub perturbations: String,
    /// The seed triggers (and perturbations) are drawn from at evaluation: the planting seed.
    pub trigger_seed: u64,
    pub anatomy: bool,
    pub device: String,
    pub dtype: String,
    /// Where the report, plots and checkpoints go (neutral: where, not what).
    pub out: PathBuf,
    /// Ignore an earlier run's results and checkpoints in `out`.
    pub restart: bool,
    /// Progress bars and lines on stderr.
    pub progress: bool,
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
                    Error::setting(
                        Setting::Cases,
                        format!("`{n}`"),
                        format!("unknown case: expected `all` or one of {known:?}"),
                    )
                })
        })
        .collect()
}

/// A checked run: the cases, each one's weights, and the settings they share (each case adds
/// its trigger to the perturbations).
pub struct Prepared {
    pub plan: DefendPlan,
    pub cases: Vec<Case>,
    /// The weights of each case, resolved and checked.
    pub weights: Vec<crate::weights::ResolvedWeights>,
    pub settings: DefendSettings,
    /// The embedded toy cases: their train and test splits are made in the output folder.
    pub toy: bool,
}

fn at_least_one(setting: Setting, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::setting(setting, 0, "must be at least 1"));
    }
    Ok(())
}

fn positive(setting: Setting, value: f64) -> Result<()> {
    if !(value.is_finite() && value > 0.0) {
        return Err(Error::setting(
            setting,
            value,
            "must be a finite number above 0",
        ));
    }
    Ok(())
}

impl DefendPlan {
    fn toy(&self) -> bool {
        matches!(self.models, Models::Toy(_))
    }

    /// The crop scale, checked: in (0, 1], and only where there are crops. By default CoOp's
    /// 0.08 for a given model; [`TOY_CROP_SCALE`] for the toy cases, whose 32 px images lose
    /// too much to crops of 8% of their area.
    fn crop_scale(&self) -> Result<f64> {
        let Some(scale) = self.crop_scale else {
            return Ok(if self.toy() {
                TOY_CROP_SCALE
            } else {
                crate::image::COOP_CROP_SCALE
            });
        };
        if !self.augment {
            return Err(Error::setting(
                Setting::CropScale,
                scale,
                "only with CoOp's augmentation (without it there are no crops)",
            ));
        }
        if !crate::image::is_crop_scale(scale) {
            return Err(Error::setting(
                Setting::CropScale,
                scale,
                "must be above 0 and at most 1 (a share of the image's area)",
            ));
        }
        Ok(scale)
    }

    /// The prompt training settings every prompted method shares (its FR weight is its own).
    fn rvpt_config(&self) -> Result<RvptConfig> {
        let mut rvpt = RvptConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            shots: self.shots,
            sampler: self.sampler,
            seed: self.seed,
            augment: self.augment,
            crop_scale: self.crop_scale()?,
            blocks: self.prompt_blocks,
            length: self.prompt_length,
            ..RvptConfig::default()
        };
        rvpt.loss.repulsion = self
            .repulsion
            .parse()
            .map_err(|e| Error::setting(Setting::Repulsion, &self.repulsion, format!("{e}")))?;
        rvpt.loss.repel = self.repel.clone();
        rvpt.loss.margin = self.margin;
        Ok(rvpt)
    }

    /// The templates CA and ASR are also reported under.
    fn asr_templates(&self) -> Result<Vec<Templates>> {
        use crate::text::{parse_template_set, OPENAI_HELD_OUT, TOY_HELD_OUT};
        match &self.asr_templates {
            Some(spec) => parse_template_set(spec).map_err(|e| {
                Error::setting(Setting::AsrTemplates, format!("`{spec}`"), format!("{e}"))
            }),
            None if self.toy() => parse_template_set(&TOY_HELD_OUT.join("|")),
            None => parse_template_set(&OPENAI_HELD_OUT.join("|")),
        }
    }

    /// The training and test folders, checked (a given model's), or where the toy splits go.
    fn folders(&self, rvpt: &RvptConfig, cases: &[Case]) -> Result<(PathBuf, PathBuf)> {
        match &self.models {
            // Made in the output folder once it is locked (`run`); the toy world has every
            // class.
            Models::Toy(_) => Ok((
                self.out.join(format!("toy-train-{}", self.shots.max(16))),
                self.out.join("toy-test"),
            )),
            Models::Given { train, test, .. } => {
                let needs = |p: &Option<PathBuf>, needs: Setting| {
                    p.clone().ok_or(Error::SettingNeeds {
                        setting: Setting::Weights,
                        needs,
                    })
                };
                let (train, test) = (
                    needs(train, Setting::TrainData)?,
                    needs(test, Setting::TestData)?,
                );
                check_folders(self, rvpt, &train, &test, &cases[0].target)?;
                Ok((train, test))
            }
        }
    }

    fn check_numbers(&self) -> Result<()> {
        at_least_one(Setting::Epochs, self.epochs)?;
        at_least_one(Setting::Shots, self.shots)?;
        at_least_one(Setting::BatchSize, self.batch_size)?;
        at_least_one(Setting::PromptLength, self.prompt_length)?;
        at_least_one(Setting::ProbeEpochs, self.probe_epochs)?;
        at_least_one(Setting::CleanclipEpochs, self.cleanclip_epochs)?;
        positive(Setting::Lr, self.lr)?;
        positive(Setting::CleanclipLr, self.cleanclip_lr)?;
        if let Some(m) = self.margin {
            if !m.is_finite() {
                return Err(Error::setting(Setting::Margin, m, "must be finite"));
            }
        }
        Ok(())
    }

    /// The cases: the embedded toy ones asked for, or the given model.
    fn cases(&self) -> Result<Vec<Case>> {
        match &self.models {
            Models::Toy(names) => select_cases(toy_cases(), names),
            Models::Given {
                weights,
                trigger,
                target,
                ..
            } => {
                let need = |o: &Option<String>, needs: Setting| {
                    o.clone().ok_or(Error::SettingNeeds {
                        setting: Setting::Weights,
                        needs,
                    })
                };
                let case = Case {
                    name: "model".into(),
                    weights: weights.clone(),
                    trigger: need(trigger, Setting::Trigger)?,
                    target: need(target, Setting::Target)?,
                };
                Ok(vec![case])
            }
        }
    }

    /// Checks every setting and input before anything is created: numbers in range, specs
    /// that parse, folders that open with the same classes, the target among them, enough
    /// images for the shots and every shot decodable, prompt and repel blocks that fit each
    /// model.
    pub fn check(self) -> Result<Prepared> {
        self.check_numbers()?;
        let device = crate::device::parse_device(&self.device)
            .map_err(|e| Error::setting(Setting::Device, &self.device, format!("{e}")))?;
        let dtype = crate::device::parse_dtype(&self.dtype)
            .map_err(|e| Error::setting(Setting::Dtype, &self.dtype, format!("{e}")))?;
        let methods = parse_methods(&self.methods, &self.lambdas)?;
        let perturbations = Perturbation::parse_list(&self.perturbations).map_err(|e| {
            Error::setting(Setting::Perturbations, &self.perturbations, format!("{e}"))
        })?;
        let rvpt = self.rvpt_config()?;
        let cases = self.cases()?;
        let toy = self.toy();
        let asr_templates = self.asr_templates()?;
        // Each case's weights, resolved (and checksummed) once, here: `run` loads them as
        // they are.
        let mut weights = Vec::with_capacity(cases.len());
        for case in &cases {
            Trigger::parse(&case.trigger)
                .map_err(|e| Error::setting(Setting::Trigger, &case.trigger, format!("{e}")))?;
            let resolved = crate::weights::resolve(&case.weights)?;
            // The blocks must fit each model (its config, without building it).
            let layers = crate::engine::read_config(&resolved)?
                .vision_config
                .num_hidden_layers;
            let blocks = rvpt.blocks.resolve(layers)?;
            rvpt.loss.repel.resolve(blocks, layers)?;
            weights.push(resolved);
        }
        let (train_dir, test_dir) = self.folders(&rvpt, &cases)?;
        for dir in &self.transfer {
            ImageFolder::open(dir, None)
                .map_err(|e| Error::setting(Setting::TestData, dir.display(), format!("{e}")))?;
        }
        if methods.iter().any(|m| m.cleanclip) {
            if let Some(pairs) = &self.cleanclip_pairs {
                if !pairs.is_file() {
                    return Err(Error::setting(
                        Setting::CleanclipPairs,
                        pairs.display(),
                        "no such file",
                    ));
                }
            }
        }
        let settings = DefendSettings {
            train_dir,
            test_dir,
            transfer_dirs: self.transfer.clone(),
            templates: self.templates.clone(),
            asr_templates,
            without_target_class: self.without_target_class,
            classnames: self.classnames.clone(),
            rvpt,
            linear_probe: LinearProbeConfig {
                epochs: self.probe_epochs,
                seed: self.seed,
                ..LinearProbeConfig::default()
            },
            cleanclip: CleanClipConfig {
                epochs: self.cleanclip_epochs,
                lr: self.cleanclip_lr,
                seed: self.seed,
                pairs: self.cleanclip_pairs.clone(),
                ..CleanClipConfig::default()
            },
            methods,
            perturbations,
            device,
            dtype,
            out_dir: self.out.clone(),
            eval_seed: self.trigger_seed,
            eval_batch: 256,
            anatomy: self.anatomy,
            progress: crate::progress::Progress::shown(self.progress),
            resume: !self.restart,
        };
        Ok(Prepared {
            plan: self,
            cases,
            weights,
            settings,
            toy,
        })
    }
}

/// The training and test folders of a given model: they open, have the same classes, hold the
/// target, have enough images for the shots, and every shot decodes.
fn check_folders(
    plan: &DefendPlan,
    rvpt: &RvptConfig,
    train_dir: &std::path::Path,
    test_dir: &std::path::Path,
    target: &str,
) -> Result<()> {
    let (train, test) = open_folders(train_dir, test_dir, plan.classnames.as_deref())?;
    test.class_index(target)
        .map_err(|e| Error::setting(Setting::Target, target, format!("{e}")))?;
    let picks = select_shots(&train, rvpt)
        .map_err(|e| Error::setting(Setting::Shots, rvpt.shots, format!("{e}")))?;
    use rayon::prelude::*;
    picks.par_iter().try_for_each(|&i| {
        let path = &train.samples()[i].0;
        crate::image::load_rgb(path).map(|_| ())
    })?;
    Ok(())
}
