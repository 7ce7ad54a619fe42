//! The splice test: which blocks of a backdoored image tower are enough for its backdoor? The
//! stem and blocks below `k` come from one model, blocks from `k` on (with the final norm and
//! projection) from the other; the text tower is the backdoored model's throughout.

use crate::data::Loader;
use crate::error::{Error, Result};
use crate::eval::{evaluate, Attack, Classifier};
use crate::metrics::Rate;
use crate::model::vision::VisionTransformer;
use crate::model::Clip;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct SpliceRow {
    /// Which part of the image tower is the backdoored model's, e.g. "stem + blocks < 6".
    pub backdoored_part: String,
    pub k: usize,
    pub clean_accuracy: Rate,
    pub attack_success_rate: Rate,
}

/// For every `k`: the backdoored stem + blocks `< k` under the reference's blocks `>= k`, and
/// the reference's stem + blocks `< k` under the backdoored blocks `>= k`; CA and ASR of each.
/// `zs` is the backdoored model's zero-shot classifier (its class text embeddings are reused).
pub fn splice_test(
    zs: &Classifier,
    reference: &Clip,
    ks: &[usize],
    loader: &Loader,
    attack: &Attack,
) -> Result<Vec<SpliceRow>> {
    let backdoored = zs.model;
    let (a, b) = (backdoored.config(), reference.config());
    if a.vision_config != b.vision_config || a.projection_dim != b.projection_dim {
        return Err(Error::Invalid(format!(
            "the reference's image tower ({} blocks of width {}, projection {}) differs from the model's ({} blocks of width {}, projection {}): cannot splice",
            b.vision_config.num_hidden_layers,
            b.vision_config.hidden_size,
            b.projection_dim,
            a.vision_config.num_hidden_layers,
            a.vision_config.hidden_size,
            a.projection_dim
        )));
    }
    let mut rows = Vec::new();
    for &k in ks {
        let lower = backdoored.with_image_tower(
            VisionTransformer::spliced(&backdoored.vision, &reference.vision, k)?,
            reference,
        );
        let upper = backdoored.with_image_tower(
            VisionTransformer::spliced(&reference.vision, &backdoored.vision, k)?,
            backdoored,
        );
        for (model, part) in [
            (&lower, format!("stem + blocks < {k}")),
            (&upper, format!("blocks >= {k}")),
        ] {
            let spliced =
                Classifier::with_text(model, model, &zs.classes, &zs.text, zs.head.clone());
            let r = evaluate(
                &spliced,
                loader,
                Some(attack),
                crate::progress::Progress::Silent,
            )?;
            rows.push(SpliceRow {
                backdoored_part: part,
                k,
                clean_accuracy: r.clean_accuracy,
                attack_success_rate: r.attack_success_rate.unwrap_or_else(|| Rate::new(0, 0)),
            });
        }
    }
    Ok(rows)
}
