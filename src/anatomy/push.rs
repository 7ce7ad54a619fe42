//! How much of a trigger's push towards the target class each component carries.
//!
//! For every image outside the target class, the target logit (logit scale × cosine to the
//! target's text embedding) is split over the components of [`decompose`]: each part's dot
//! product with the unit text embedding, over the norm of the image embedding (fixed per image,
//! like the final norm's statistics), so the parts sum to the logit. A component's push is the
//! mean over images of its part on the triggered image minus its part on the clean one.

use super::decompose::{components, decompose, Component};
use crate::attacks::Trigger;
use crate::data::Loader;
use crate::error::{Error, Result};
use crate::eval::{per_image, Classifier};
use crate::metrics::{argmax_rows, Rate};
use crate::train::rvpt::{DeepPrompts, PromptPlacement};
use candle_core::{DType, Tensor, D};
use serde::Serialize;

/// One component's push: the mean change of its part of the target logit, and its share of
/// the heads' and MLPs' summed push.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ComponentPush {
    pub name: String,
    pub component: Component,
    pub push: f64,
    pub share: f64,
}

/// The pushes of one block's heads and MLP.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LayerPush {
    pub layer: usize,
    pub heads: Vec<f64>,
    pub mlp: f64,
    /// Σ heads + MLP.
    pub push: f64,
    pub share: f64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AnatomyReport {
    pub trigger: String,
    pub target: String,
    /// Images outside the target class that were measured.
    pub images: usize,
    /// Triggered images classified as the target (from the same forward passes).
    pub attack_success_rate: Rate,
    /// Mean change of the target logit under the trigger: the sum of all pushes.
    pub total_push: f64,
    /// The part of it the heads and MLPs write: what every `share` divides.
    pub written_push: f64,
    /// The heads' and MLPs' pushes in absolute value: `written_push` well below it means they
    /// cancel (no backdoor), and the shares say nothing.
    pub gross_push: f64,
    pub components: Vec<ComponentPush>,
    pub layers: Vec<LayerPush>,
    /// The blocks the default prompts act in, `first..end`.
    pub prompted_blocks: (usize, usize),
    /// Share of the total push from the prompted blocks, from their heads and from their MLPs.
    pub prompted_share: f64,
    pub prompted_heads_share: f64,
    pub prompted_mlp_share: f64,
    /// Share of the total push from all heads and from all MLPs.
    pub heads_share: f64,
    pub mlp_share: f64,
    /// The components with the largest push, largest first.
    pub top: Vec<ComponentPush>,
    pub verdict: String,
}

/// What to measure: a trigger (with the seed it was planted with) towards a target class.
pub struct PushSpec<'a> {
    pub trigger: &'a Trigger,
    pub target: usize,
    pub seed: u64,
    /// The blocks the prompts act in (the last 6 by default).
    pub prompted_blocks: PromptPlacement,
    /// How many components `top` lists.
    pub top: usize,
}

/// Per-image target-logit parts (B, components), f32.
fn target_logit_parts(
    zs: &Classifier,
    unit_images: &Tensor,
    prompts: Option<&DeepPrompts>,
    target: usize,
) -> Result<(Tensor, Tensor)> {
    let pixels = zs.pixels(unit_images)?;
    let d = decompose(
        &zs.model.vision,
        zs.model.visual_projection_weight(),
        &pixels,
        prompts,
    )?;
    let norms = d.embeds.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    let unit = d.embeds.broadcast_div(&norms)?;
    let logits = zs
        .logits(&unit.to_dtype(zs.text.dtype())?)?
        .to_dtype(DType::F32)?;
    // The target logit is linear in the unit embedding: its direction is the target's text
    // embedding times logit_scale (zero-shot), or the head's row (the bias does not move).
    let (direction, scale) = match &zs.head {
        Some(head) => (head.weight.get(target)?, Tensor::new(1f32, unit.device())?),
        None => (zs.text.get(target)?, zs.model.logit_scale()?),
    };
    let t = direction.to_dtype(DType::F32)?.unsqueeze(1)?;
    let scale = scale.to_dtype(DType::F32)?;
    let parts = d
        .parts
        .broadcast_matmul(&t)?
        .squeeze(2)?
        .broadcast_div(&norms)?
        .broadcast_mul(&scale)?;
    Ok((parts, logits))
}

/// Measures the push of `spec.trigger` towards `spec.target` per component, over every image
/// of `loader` outside the target class, through the model of `zs` (with `prompts`, the
/// defended one).
pub fn trigger_push(
    zs: &Classifier,
    loader: &Loader,
    spec: &PushSpec,
    prompts: Option<&DeepPrompts>,
    progress: crate::progress::Progress,
) -> Result<AnatomyReport> {
    let vcfg = zs.model.config().vision_config.clone();
    let (layers, heads) = (vcfg.num_hidden_layers, vcfg.num_attention_heads);
    let prompted_range = spec.prompted_blocks.resolve(layers)?;
    let comps = components(layers, heads);
    let mut sums = vec![0f64; comps.len()];
    let (mut images, mut hits) = (0usize, 0usize);
    let bar = progress.images(loader.len(), "anatomy");
    let mut batches = loader.all()?;
    for batch in batches.by_ref() {
        let batch = batch?;
        bar.inc(batch.labels.len() as u64);
        let keep: Vec<u32> = (0..batch.labels.len() as u32)
            .filter(|&i| batch.labels[i as usize] != spec.target)
            .collect();
        if keep.is_empty() {
            continue;
        }
        let keep = Tensor::new(keep.as_slice(), batch.images.device())?;
        let clean = batch.images.index_select(&keep, 0)?;
        let triggered = per_image(&batch, |img, i| spec.trigger.apply(img, spec.seed, i))?
            .index_select(&keep, 0)?;
        let (clean_parts, _) = target_logit_parts(zs, &clean, prompts, spec.target)?;
        let (trig_parts, trig_logits) = target_logit_parts(zs, &triggered, prompts, spec.target)?;
        let delta = (trig_parts - clean_parts)?.sum(0)?.to_vec1::<f32>()?;
        for (s, d) in sums.iter_mut().zip(delta) {
            *s += d as f64;
        }
        let preds = argmax_rows(&trig_logits)?;
        hits += preds.iter().filter(|&&p| p == spec.target).count();
        images += preds.len();
    }
    bar.finish_and_clear();
    if images == 0 {
        return Err(Error::Invalid(
            "no images outside the target class to measure the trigger on".into(),
        ));
    }
    let pushes: Vec<f64> = sums.iter().map(|s| s / images as f64).collect();
    Ok(summarise(
        zs,
        spec,
        prompted_range,
        &comps,
        &pushes,
        images,
        hits,
    ))
}

fn summarise(
    zs: &Classifier,
    spec: &PushSpec,
    prompted_range: std::ops::Range<usize>,
    comps: &[Component],
    pushes: &[f64],
    images: usize,
    hits: usize,
) -> AnatomyReport {
    let vcfg = &zs.model.config().vision_config;
    let layers = vcfg.num_hidden_layers;
    let total: f64 = pushes.iter().sum();
    // Shares are of what the heads and MLPs push. The input and the final-norm bias are fixed
    // vectors: their parts move only because the triggered embedding's norm (and the norm
    // statistics) change, which would otherwise blur every share.
    let written: f64 = comps
        .iter()
        .zip(pushes)
        .filter(|(c, _)| c.layer().is_some())
        .map(|(_, p)| p)
        .sum();
    // Shares mean something only when the pushes add up rather than cancel: a clean model's
    // components move the target logit both ways by similar amounts around a net near zero.
    let gross: f64 = comps
        .iter()
        .zip(pushes)
        .filter(|(c, _)| c.layer().is_some())
        .map(|(_, p)| p.abs())
        .sum();
    let share = |p: f64| p / written;
    let components: Vec<ComponentPush> = comps
        .iter()
        .zip(pushes)
        .map(|(c, &p)| ComponentPush {
            name: c.name(),
            component: *c,
            push: p,
            share: share(p),
        })
        .collect();
    let layer_rows = layer_pushes(&components, layers, written);
    let (first, end) = (prompted_range.start, prompted_range.end);
    let prompted = &layer_rows[prompted_range];
    let prompted_heads: f64 = prompted.iter().flat_map(|l| &l.heads).sum();
    let prompted_mlp: f64 = prompted.iter().map(|l| l.mlp).sum();
    let all_heads: f64 = layer_rows.iter().flat_map(|l| &l.heads).sum();
    let all_mlp: f64 = layer_rows.iter().map(|l| l.mlp).sum();
    let mut top = components.clone();
    top.sort_by(|a, b| b.push.total_cmp(&a.push));
    top.truncate(spec.top);
    let mut report = AnatomyReport {
        trigger: spec.trigger.name(),
        target: zs.classes[spec.target].clone(),
        images,
        attack_success_rate: Rate::new(hits, images),
        total_push: total,
        written_push: written,
        gross_push: gross,
        components,
        layers: layer_rows,
        prompted_blocks: (first, end),
        prompted_share: share(prompted_heads + prompted_mlp),
        prompted_heads_share: share(prompted_heads),
        prompted_mlp_share: share(prompted_mlp),
        heads_share: share(all_heads),
        mlp_share: share(all_mlp),
        top,
        verdict: String::new(),
    };
    report.verdict = verdict(&report);
    report
}

/// One row per block (`layers` of them), each head and MLP of `components` in its block's row,
/// its share of `written`.
fn layer_pushes(components: &[ComponentPush], layers: usize, written: f64) -> Vec<LayerPush> {
    let mut rows: Vec<LayerPush> = (0..layers)
        .map(|layer| LayerPush {
            layer,
            heads: Vec::new(),
            mlp: 0.0,
            push: 0.0,
            share: 0.0,
        })
        .collect();
    // One pass over the components.
    for c in components {
        match c.component {
            Component::Head { layer, .. } => rows[layer].heads.push(c.push),
            Component::Mlp { layer } => rows[layer].mlp = c.push,
            Component::Input | Component::FinalNormBias => {}
        }
    }
    for row in &mut rows {
        row.push = row.heads.iter().sum::<f64>() + row.mlp;
        row.share = row.push / written;
    }
    rows
}

/// The report's one-line reading: where the push towards the target comes from, or, when the
/// heads' and MLPs' pushes cancel, that there is nothing to locate.
fn verdict(r: &AnatomyReport) -> String {
    let (target, (first, end)) = (&r.target, r.prompted_blocks);
    let (written, gross) = (r.written_push, r.gross_push);
    if written > 0.5 * gross {
        format!(
            "{:.0}% of the heads' and MLPs' push towards `{target}` comes from blocks {first}–{} \
             (heads {:.0}%, MLPs {:.0}%); top component {} ({:.0}%)",
            100.0 * r.prompted_share,
            end - 1,
            100.0 * r.prompted_heads_share,
            100.0 * r.prompted_mlp_share,
            r.top.first().map_or(String::new(), |c| c.name.clone()),
            100.0 * r.top.first().map_or(0.0, |c| c.share),
        )
    } else {
        format!(
            "the heads' and MLPs' pushes towards `{target}` under the trigger cancel (net \
             {written:.3} of {gross:.3} in absolute value): no backdoor to locate, shares are not meaningful"
        )
    }
}
