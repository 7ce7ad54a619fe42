//! Evaluation passes over a labelled dataset: zero-shot CA, ASR under a trigger, and PR under
//! perturbations. Images stay in [0, 1] until the trigger or perturbation has been applied, then
//! they are normalised: the one path every image takes.

use crate::attacks::{perturb::Perturbation, Trigger};
use crate::data::{Batch, Loader};
use crate::error::{Error, Result};
use crate::metrics::{
    argmax_rows, attack_success_rate, clean_accuracy, AsrConvention, LayerwiseAccumulator, Rate,
    Resistivity, ResistivityAccumulator,
};
use crate::model::{ops::l2_normalize, Clip};
use crate::text::{class_text_embeddings_with, ClipTokenizer, Templates};
use candle_core::{Device, Tensor};

/// How pixels become pooled image features: the plain encoder, or one with prompts (RVPT).
pub trait ImageEncoder {
    /// Normalised pixels (B, 3, S, S) → pooled feature (B, width), pre-projection.
    fn features(&self, pixels: &Tensor) -> Result<Tensor>;

    /// The [CLS] token (B, width) after every block, for the layer-wise profile.
    fn cls_per_block(&self, pixels: &Tensor) -> Result<Vec<Tensor>>;
}

impl<T: ImageEncoder + ?Sized> ImageEncoder for &T {
    fn features(&self, pixels: &Tensor) -> Result<Tensor> {
        (**self).features(pixels)
    }

    fn cls_per_block(&self, pixels: &Tensor) -> Result<Vec<Tensor>> {
        (**self).cls_per_block(pixels)
    }
}

impl ImageEncoder for Clip {
    fn features(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(self.image_features(pixels)?)
    }

    fn cls_per_block(&self, pixels: &Tensor) -> Result<Vec<Tensor>> {
        let states = self.vision.hidden_states(pixels)?;
        states[1..]
            .iter()
            .map(|s| Ok(s.narrow(1, 0, 1)?.squeeze(1)?))
            .collect()
    }
}

/// A linear head on the unit image embedding: `logits = e Wᵀ + b` (what Linear Probe trains).
#[derive(Debug, Clone)]
pub struct LinearHead {
    /// (classes, projection_dim).
    pub weight: Tensor,
    /// (classes,).
    pub bias: Tensor,
}

impl LinearHead {
    /// Unit image embeddings (B, projection_dim) → logits (B, classes).
    pub fn logits(&self, embeds: &Tensor) -> Result<Tensor> {
        let w = self.weight.to_dtype(embeds.dtype())?;
        let b = self.bias.to_dtype(embeds.dtype())?;
        Ok(embeds.matmul(&w.t()?)?.broadcast_add(&b)?)
    }
}

/// An image classifier: the model's image tower (through `encoder`), its projection, and either
/// CLIP's zero-shot head (cosine to fixed class text embeddings) or a trained linear head.
pub struct Classifier<'a> {
    pub model: &'a Clip,
    pub encoder: &'a dyn ImageEncoder,
    pub classes: Vec<String>,
    /// (classes, projection_dim), unit rows.
    pub text: Tensor,
    /// When set, it replaces the zero-shot head (Linear Probe has no zero-shot path).
    pub head: Option<LinearHead>,
}

impl<'a> Classifier<'a> {
    pub fn new(
        model: &'a Clip,
        encoder: &'a dyn ImageEncoder,
        tokenizer: &ClipTokenizer,
        classes: &[String],
        templates: Templates,
        device: &Device,
    ) -> Result<Self> {
        let text = class_text_embeddings_with(model, tokenizer, classes, templates, device)?;
        Ok(Self::with_text(model, encoder, classes, &text, None))
    }

    /// A classifier over `classes` with class text embeddings already made, and `head` (if
    /// any) in place of the zero-shot head.
    pub fn with_text(
        model: &'a Clip,
        encoder: &'a dyn ImageEncoder,
        classes: &[String],
        text: &Tensor,
        head: Option<LinearHead>,
    ) -> Self {
        Self {
            model,
            encoder,
            classes: classes.to_vec(),
            text: text.clone(),
            head,
        }
    }

    /// Images in [0, 1] → normalised pixels on the model's device and dtype.
    pub fn pixels(&self, unit_images: &Tensor) -> Result<Tensor> {
        let pixels = crate::image::normalize_with(
            &unit_images.to_device(self.text.device())?,
            &self.model.config().preprocess,
        )?;
        Ok(pixels.to_dtype(self.text.dtype())?)
    }

    /// Images in [0, 1] → (pooled features, logits): logit_scale * cosine to each class, or
    /// the linear head's output.
    pub fn forward(&self, unit_images: &Tensor) -> Result<(Tensor, Tensor)> {
        let pixels = self.pixels(unit_images)?;
        let features = self.encoder.features(&pixels)?;
        let embeds = self.embed(&features)?;
        Ok((features, self.logits(&embeds)?))
    }

    /// Pooled features → unit image embeddings.
    pub fn embed(&self, features: &Tensor) -> Result<Tensor> {
        Ok(l2_normalize(&self.model.project_image(features)?)?)
    }

    /// Unit image embeddings → class logits.
    pub fn logits(&self, embeds: &Tensor) -> Result<Tensor> {
        match &self.head {
            Some(head) => head.logits(embeds),
            None => Ok(embeds
                .matmul(&self.text.t()?)?
                .broadcast_mul(&self.model.logit_scale()?.to_dtype(self.text.dtype())?)?),
        }
    }

    /// The name of the head, for reports.
    pub fn head_name(&self) -> &'static str {
        if self.head.is_some() {
            "linear probe"
        } else {
            "zero-shot"
        }
    }

    pub fn class_index(&self, name: &str) -> Result<usize> {
        self.classes.iter().position(|c| c == name).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown target class `{name}`; classes are: {}",
                self.classes.join(", ")
            ))
        })
    }
}

/// A trigger with the class it should force.
pub struct Attack<'a> {
    pub trigger: &'a Trigger,
    pub target: usize,
    pub seed: u64,
    pub convention: AsrConvention,
}

/// CA, and ASR when an attack is given.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    pub clean_accuracy: Rate,
    pub attack_success_rate: Option<Rate>,
    pub trigger: Option<String>,
    pub target: Option<String>,
    pub asr_convention: Option<AsrConvention>,
    pub skipped: Vec<String>,
}

/// Applies `f(image, sample index)` to every image of a batch.
pub(crate) fn per_image(
    batch: &Batch,
    f: impl Fn(&Tensor, u64) -> Result<Tensor>,
) -> Result<Tensor> {
    let images = (0..batch.labels.len())
        .map(|b| f(&batch.images.get(b)?, batch.indices[b] as u64))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&images, 0)?)
}

/// CA and ASR under each of `templates`, a zero-shot head each over the same images through
/// the same `encoder`: a backdoor bound to one sentence shows as an ASR that falls under the
/// other phrasings.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_under_templates(
    model: &Clip,
    encoder: &dyn ImageEncoder,
    tokenizer: &ClipTokenizer,
    classes: &[String],
    templates: &[Templates],
    loader: &Loader,
    attack: Option<&Attack>,
    progress: crate::progress::Progress,
) -> Result<Vec<(Templates, EvalReport)>> {
    templates
        .iter()
        .map(|t| {
            let device = model.logit_scale()?.device().clone();
            let text = class_text_embeddings_with(model, tokenizer, classes, t.clone(), &device)?;
            let zs = Classifier::with_text(model, encoder, classes, &text, None);
            Ok((t.clone(), evaluate(&zs, loader, attack, progress)?))
        })
        .collect()
}

/// One pass over `loader`: predictions on clean images and, with `attack`, on triggered ones.
pub fn evaluate(
    zs: &Classifier,
    loader: &Loader,
    attack: Option<&Attack>,
    progress: crate::progress::Progress,
) -> Result<EvalReport> {
    Ok(evaluate_with_resistivity(zs, loader, attack, &[], 0, false, progress)?.0)
}

/// PR of one perturbation, with the layer-wise [CLS] cosine profile when asked for.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PerturbationResult {
    pub perturbation: String,
    pub resistivity: Resistivity,
    pub layerwise_cls_cosine: Option<Vec<f64>>,
}

/// PR per perturbation, over every image of `loader`.
pub fn resistivity(
    zs: &Classifier,
    loader: &Loader,
    perturbations: &[Perturbation],
    seed: u64,
    layerwise: bool,
    progress: crate::progress::Progress,
) -> Result<Vec<PerturbationResult>> {
    if perturbations.is_empty() {
        return Err(Error::Invalid("no perturbations given".into()));
    }
    let pass =
        evaluate_with_resistivity(zs, loader, None, perturbations, seed, layerwise, progress)?;
    Ok(pass.1)
}

/// CA, ASR and PR in one pass over `loader`. The clean forward is shared by all three, and a
/// perturbation that is the attack's own trigger (same spec, same seed) also gives the
/// triggered predictions, so nothing is computed twice.
pub fn evaluate_with_resistivity(
    zs: &Classifier,
    loader: &Loader,
    attack: Option<&Attack>,
    perturbations: &[Perturbation],
    seed: u64,
    layerwise: bool,
    progress: crate::progress::Progress,
) -> Result<(EvalReport, Vec<PerturbationResult>)> {
    let bar = progress.images(loader.len(), "evaluating");
    let shared_trigger = attack.and_then(|a| {
        perturbations.iter().position(|p| {
            matches!(p, Perturbation::Trigger(t) if t.name() == a.trigger.name()) && seed == a.seed
        })
    });
    let (mut preds, mut triggered, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    let mut accs = vec![ResistivityAccumulator::default(); perturbations.len()];
    let mut layer_accs = vec![LayerwiseAccumulator::default(); perturbations.len()];
    let mut batches = loader.all()?;
    for batch in batches.by_ref() {
        let batch = batch?;
        let (f, l) = zs.forward(&batch.images)?;
        preds.extend(argmax_rows(&l)?);
        let cls = if layerwise {
            zs.encoder.cls_per_block(&zs.pixels(&batch.images)?)?
        } else {
            Vec::new()
        };
        for (k, p) in perturbations.iter().enumerate() {
            let perturbed = per_image(&batch, |img, i| p.apply(img, seed, i))?;
            let (pf, pl) = zs.forward(&perturbed)?;
            accs[k].add(&f, &pf, &l, &pl)?;
            if layerwise {
                let pcls = zs.encoder.cls_per_block(&zs.pixels(&perturbed)?)?;
                layer_accs[k].add(&cls, &pcls)?;
            }
            if shared_trigger == Some(k) {
                triggered.extend(argmax_rows(&pl)?);
            }
        }
        if let (Some(a), None) = (attack, shared_trigger) {
            let poisoned = per_image(&batch, |img, i| a.trigger.apply(img, a.seed, i))?;
            triggered.extend(argmax_rows(&zs.forward(&poisoned)?.1)?);
        }
        labels.extend_from_slice(&batch.labels);
        bar.inc(batch.labels.len() as u64);
    }
    bar.finish_and_clear();
    let skipped = batches
        .skipped()
        .iter()
        .map(|s| format!("{}: {}", s.path.display(), s.reason))
        .collect();
    let asr = match attack {
        Some(a) => Some(attack_success_rate(
            &triggered,
            &labels,
            a.target,
            a.convention,
        )?),
        None => None,
    };
    let report = EvalReport {
        clean_accuracy: clean_accuracy(&preds, &labels)?,
        attack_success_rate: asr,
        trigger: attack.map(|a| a.trigger.name()),
        target: attack.map(|a| zs.classes[a.target].clone()),
        asr_convention: attack.map(|a| a.convention),
        skipped,
    };
    let prs = perturbations
        .iter()
        .zip(accs.iter().zip(&layer_accs))
        .map(|(p, (a, la))| PerturbationResult {
            perturbation: p.name(),
            resistivity: a.finish(),
            layerwise_cls_cosine: layerwise.then(|| la.finish()),
        })
        .collect();
    Ok((report, prs))
}
