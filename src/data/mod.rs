//! Datasets and batches: class folders and CSV manifests, seeded k-shot sampling, and a
//! parallel loader that yields preprocessed image batches in order.
//!
//! Every dataset hands the loader the same thing: `(path, label)` pairs, the label an index into
//! the dataset's class list. Batches stay in [0, 1] pixel space, not CLIP-normalised, because
//! triggers and perturbations are applied there; normalise with [`crate::image::normalize`]
//! right before the model.

pub mod coop;
mod folder;
mod loader;
mod manifest;
mod sampler;

pub use folder::{is_image_file, ImageFolder, IMAGENET, IMAGENET_CLASSNAMES};
pub use loader::{Batch, Batches, Item, Loader, OnBadImage, Skipped, Transform};
pub use manifest::{CaptionManifest, LabeledManifest};
pub use sampler::{k_shot, k_shot_coop, random_subset, shuffled, TooFew};

use crate::error::{Error, Result};

/// The index of `name` in `classes` (first match), or `UnknownClass` listing the valid names.
pub(crate) fn find_class(classes: &[String], name: &str) -> Result<usize> {
    classes
        .iter()
        .position(|c| c == name)
        .ok_or_else(|| Error::UnknownClass {
            name: name.to_string(),
            valid: classes.to_vec(),
        })
}
