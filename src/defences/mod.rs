//! The defences `rvpt defend` compares, as one family. A method is a pipeline of up to three
//! stages, each in its own file: fine-tune the whole model (`cleanclip`), train deep prompts
//! (`prompts`: VPT or RVPT), fit a linear head on the image embeddings (`linear_probe`). Every
//! method is then measured by the same evaluation pass.

pub mod cleanclip;
pub mod linear_probe;
pub mod prompts;

use crate::error::{Error, Result, Setting};
use crate::eval::{Classifier, LinearHead};
use crate::model::Clip;
use crate::text::ClipTokenizer;
use crate::train::rvpt::{DeepPrompts, EpochLog, RvptConfig};
use crate::weights::ResolvedWeights;
use candle_core::{DType, Device, Tensor};
use cleanclip::CleanClipConfig;
use linear_probe::LinearProbeConfig;
use std::path::PathBuf;

/// One method: which stages run. `none` runs none of them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MethodSpec {
    pub name: String,
    /// CleanCLIP fine-tunes the whole model first.
    pub cleanclip: bool,
    /// FR weight of the prompts: 0 is VPT, above 0 RVPT; `None`, no prompts.
    pub lambda: Option<f64>,
    /// A linear head replaces the zero-shot head.
    pub linear_probe: bool,
}

/// The stage names `--methods` accepts, joined by `+` (e.g. `rvpt+linear-probe`).
pub const STAGES: [&str; 5] = ["none", "cleanclip", "vpt", "rvpt", "linear-probe"];

impl MethodSpec {
    /// Whether the method trains anything.
    pub fn is_none(&self) -> bool {
        !self.cleanclip && self.lambda.is_none() && !self.linear_probe
    }
}

/// Parses `--methods` with `--lambda`: `rvpt` becomes one method per positive FR weight (named
/// `rvpt-<lambda>` when there are several); a weight of 0 in the list means VPT.
pub fn parse_methods(methods: &[String], lambdas: &[f64]) -> Result<Vec<MethodSpec>> {
    if lambdas.is_empty() || lambdas.iter().any(|l| !(l.is_finite() && *l >= 0.0)) {
        return Err(Error::setting(
            Setting::Lambda,
            format!("{lambdas:?}"),
            "need one or more finite, non-negative FR weights",
        ));
    }
    if methods.is_empty() {
        return Err(Error::setting(
            Setting::Methods,
            "[]",
            format!("empty: use any of {STAGES:?}, or stages joined by `+`"),
        ));
    }
    let mut out: Vec<MethodSpec> = Vec::new();
    for method in methods {
        for spec in method_specs(method, lambdas)? {
            if !out.iter().any(|o| o.name == spec.name) {
                out.push(spec);
            }
        }
    }
    // Baselines, then VPT, then RVPT, whatever the order given: the table reads as a
    // progression (the sort is stable, so lambdas keep their order).
    out.sort_by_key(|m| match m.lambda {
        None if m.is_none() => 0,
        None => 1,
        Some(0.0) => 2,
        Some(_) => 3,
    });
    Ok(out)
}

/// The methods one `--methods` entry names (stages joined by `+`): one per positive lambda for
/// `rvpt` (and VPT when lambda 0 is among them), else one.
fn method_specs(method: &str, lambdas: &[f64]) -> Result<Vec<MethodSpec>> {
    let stages: Vec<&str> = method.split('+').map(str::trim).collect();
    if let Some(bad) = stages.iter().find(|s| !STAGES.contains(s)) {
        return Err(Error::setting(
            Setting::Methods,
            format!("`{method}`"),
            format!("unknown stage `{bad}`; stages are {STAGES:?}, joined by `+`"),
        ));
    }
    let has = |s: &str| stages.contains(&s);
    if (stages.len() > 1 && has("none")) || (has("vpt") && has("rvpt")) {
        return Err(Error::setting(
            Setting::Methods,
            format!("`{method}`"),
            "`none` stands alone, and vpt and rvpt exclude each other",
        ));
    }
    let (cleanclip, linear_probe) = (has("cleanclip"), has("linear-probe"));
    let prefix = if cleanclip { "cleanclip+" } else { "" };
    let suffix = if linear_probe { "+linear-probe" } else { "" };
    let spec = |name: String, lambda: Option<f64>| MethodSpec {
        name,
        cleanclip,
        lambda,
        linear_probe,
    };
    let vpt = || spec(format!("{prefix}vpt{suffix}"), Some(0.0));
    if has("rvpt") {
        let repelling: Vec<f64> = lambdas.iter().copied().filter(|&l| l > 0.0).collect();
        if repelling.is_empty() {
            return Err(Error::setting(
                Setting::Lambda,
                format!("{lambdas:?}"),
                "rvpt needs a positive FR weight (0 is VPT)",
            ));
        }
        let mut specs: Vec<MethodSpec> = repelling
            .iter()
            .map(|&lambda| {
                let base = if repelling.len() == 1 {
                    "rvpt".to_string()
                } else {
                    format!("rvpt-{lambda}")
                };
                spec(format!("{prefix}{base}{suffix}"), Some(lambda))
            })
            .collect();
        if lambdas.contains(&0.0) {
            specs.push(vpt());
        }
        Ok(specs)
    } else if has("vpt") {
        Ok(vec![vpt()])
    } else {
        let name = match (cleanclip, linear_probe) {
            (false, false) => "none",
            (false, true) => "linear-probe",
            (true, false) => "cleanclip",
            (true, true) => "cleanclip+linear-probe",
        };
        Ok(vec![spec(name.into(), None)])
    }
}

/// What every defence trains from.
pub struct DefenceContext<'a> {
    /// The backdoored model, where it was loaded from, and its tokenizer.
    pub model: &'a Clip,
    pub weights: &'a ResolvedWeights,
    pub tokenizer: &'a ClipTokenizer,
    /// Class text embeddings (classes, projection_dim), unit rows.
    pub text: &'a Tensor,
    pub classes: &'a [String],
    /// The k shots: (image path, class index).
    pub samples: &'a [(PathBuf, usize)],
    pub image_size: u32,
    pub rvpt: &'a RvptConfig,
    pub linear_probe: &'a LinearProbeConfig,
    pub cleanclip: &'a CleanClipConfig,
    /// The class text templates (`text` was made with them).
    pub templates: &'a crate::text::Templates,
    pub dtype: DType,
    pub device: Device,
    /// sha256 of the backdoored checkpoint, recorded in prompt checkpoints.
    pub base_sha256: String,
    pub progress: crate::progress::Progress,
    /// Continue a prompt checkpoint of the same settings and weights, reuse a finished
    /// CleanCLIP model of the same settings (`--restart` turns it off).
    pub resume: bool,
}

/// What a method produced, ready to evaluate.
pub struct Defended {
    /// The fine-tuned model and its class text embeddings (CleanCLIP); `None`: the backdoored
    /// model and its text embeddings.
    pub model: Option<(Clip, Tensor)>,
    pub prompts: Option<DeepPrompts>,
    pub head: Option<LinearHead>,
    /// The prompts' loss per epoch (empty without prompts).
    pub epochs: Vec<EpochLog>,
}

/// Where a method writes what it trains.
pub struct Outputs {
    /// The prompt checkpoint (VPT, RVPT).
    pub prompts_file: PathBuf,
    /// The fine-tuned model's directory (CleanCLIP).
    pub model_dir: PathBuf,
    /// The method's resolved configuration (`defend::RunConfig`), recorded with what it writes:
    /// a checkpoint or model is reused only under the same.
    pub config: serde_json::Value,
}

/// The CleanCLIP stage: a model fine-tuned with the same settings by an earlier run into the
/// same folder (its `cleanclip.json` says so), else a fresh fine-tune, recorded the same way.
fn fine_tuned(ctx: &DefenceContext, out: &Outputs) -> Result<Clip> {
    let dir = &out.model_dir;
    let record = dir.join("cleanclip.json");
    let settings = serde_json::json!({
        "config": out.config,
        "base_sha256": ctx.base_sha256,
        "shots": ctx.samples,
    });
    if ctx.resume && dir.join("model.safetensors").is_file() {
        let earlier: Option<serde_json::Value> = std::fs::read_to_string(&record)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if earlier.as_ref() == Some(&settings) {
            ctx.progress
                .note(|| format!("reusing the CleanCLIP model in {}", dir.display()));
            let engine =
                crate::engine::Engine::load(&dir.display().to_string(), &ctx.device, ctx.dtype)?;
            return Ok(engine.model);
        }
    }
    let model = cleanclip::fine_tune(ctx, ctx.cleanclip, dir)?;
    crate::report::write_json(&record, &settings)?;
    Ok(model)
}

/// Runs the stages of `method` in order: fine-tune, prompts, linear head.
pub fn apply(method: &MethodSpec, ctx: &DefenceContext, out: &Outputs) -> Result<Defended> {
    let tuned = if method.cleanclip {
        let model = fine_tuned(ctx, out)?;
        // The zero-shot head of the fine-tuned model, with the run's templates.
        let text = crate::text::class_text_embeddings_with(
            &model,
            ctx.tokenizer,
            ctx.classes,
            ctx.templates.clone(),
            &ctx.device,
        )?;
        Some((model, text))
    } else {
        None
    };
    let (model, text) = match &tuned {
        Some((m, t)) => (m, t),
        None => (ctx.model, ctx.text),
    };
    let base_sha256 = if tuned.is_some() {
        crate::weights::sha256_file(&out.model_dir.join("model.safetensors"))?
    } else {
        ctx.base_sha256.clone()
    };
    let (prompts, epochs) = match method.lambda {
        Some(lambda) => {
            let (p, logs) = prompts::train(model, text, ctx, &base_sha256, lambda, out)?;
            (Some(p), logs)
        }
        None => (None, Vec::new()),
    };
    let head = if method.linear_probe {
        let encoder = crate::engine::encoder(model, prompts.as_ref())?;
        let classifier = Classifier::with_text(model, encoder.as_ref(), ctx.classes, text, None);
        let x = linear_probe::embeddings(&classifier, ctx.samples, ctx.image_size)?;
        let labels: Vec<usize> = ctx.samples.iter().map(|s| s.1).collect();
        Some(linear_probe::fit(
            &x,
            &labels,
            ctx.classes.len(),
            ctx.linear_probe,
        )?)
    } else {
        None
    };
    Ok(Defended {
        model: tuned,
        prompts,
        head,
        epochs,
    })
}
