//! BadNet (Gu et al. 2017): a small square patch pasted into the image.
//!
//! Default: CleanCLIP's semantics (`patch_type="random"`, `patch_location="random"`). Per image,
//! the patch is the image's per-channel mean plus N(0, 1) noise, and its top-left corner is uniform
//! in [0, H-1-p] x [0, W-1-p] (CleanCLIP's inclusive `randint(0, 223 - p)` at 224 px, so the patch
//! never touches the last row or column). The patch values are NOT clamped to [0, 1], as in
//! CleanCLIP: the encoder sees them as drawn; clamp afterwards if a valid image is needed.
//!
//! `fixed` (BackdoorBench): one black/white pattern (each pixel 0 or 1 with probability 1/2,
//! equal on the three channels) drawn once from the seed, flush with the bottom-right corner.

use super::patch::{apply_patch, Placement};
use super::{bad_spec, options, parse_num, per_image, rng, Dims};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;

/// The patch side at 224 px in CleanCLIP and BackdoorBench.
pub const DEFAULT_SIZE: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadNet {
    /// Patch side in pixels.
    pub size: usize,
    /// A fixed pattern at the bottom-right corner instead of CleanCLIP's per-image random patch.
    pub fixed: bool,
}

/// The random parameters of one image: `values` (3, p, p) is the noise added to the channel
/// means (random mode) or the pattern itself (fixed mode); (row, col) is the top-left corner.
#[derive(Debug, Clone)]
pub struct BadNetDraw {
    pub values: Tensor,
    pub row: usize,
    pub col: usize,
}

impl Default for BadNet {
    fn default() -> Self {
        BadNet {
            size: DEFAULT_SIZE,
            fixed: false,
        }
    }
}

impl BadNet {
    /// Options: `fixed`, `size=N`.
    pub(crate) fn parse_options(spec: &str, rest: Option<&str>) -> Result<Self> {
        let mut t = BadNet::default();
        for (key, value) in options(spec, rest)? {
            match (key, value) {
                ("fixed", None) => t.fixed = true,
                ("size", v) => t.size = parse_num(spec, key, v)?,
                _ => return Err(bad_spec(spec, format!("unknown badnet option `{key}`"))),
            }
        }
        if t.size == 0 {
            return Err(bad_spec(spec, "the patch size must be positive"));
        }
        Ok(t)
    }

    pub fn name(&self) -> String {
        let mut opts = Vec::new();
        if self.fixed {
            opts.push("fixed".to_string());
        }
        if self.size != DEFAULT_SIZE {
            opts.push(format!("size={}", self.size));
        }
        if opts.is_empty() {
            "badnet".into()
        } else {
            format!("badnet:{}", opts.join(","))
        }
    }

    /// Draws the patch parameters of image `index` for an `h` x `w` image.
    pub fn draw(&self, h: usize, w: usize, seed: u64, index: u64) -> Result<BadNetDraw> {
        let p = self.size;
        if self.fixed {
            let (row, col) = Placement::BottomRight.resolve(h, w, p)?;
            // Index-free stream: the same pattern for every image of the attack.
            let mut r = rng(seed, 0, "badnet-fixed");
            let plane: Vec<f32> = (0..p * p)
                .map(|_| if r.random::<bool>() { 1.0 } else { 0.0 })
                .collect();
            let values = plane.repeat(3);
            return Ok(BadNetDraw {
                values: Tensor::from_vec(values, (3, p, p), &Device::Cpu)?,
                row,
                col,
            });
        }
        if p >= h || p >= w {
            return Err(Error::Invalid(format!(
                "badnet: a {p} px patch needs an image larger than {p} px, got {h} x {w}"
            )));
        }
        let mut r = rng(seed, index, "badnet");
        let noise: Vec<f32> = (0..3 * p * p)
            .map(|_| r.sample::<f32, _>(StandardNormal))
            .collect();
        let row = r.random_range(0..=h - 1 - p);
        let col = r.random_range(0..=w - 1 - p);
        Ok(BadNetDraw {
            values: Tensor::from_vec(noise, (3, p, p), &Device::Cpu)?,
            row,
            col,
        })
    }

    /// The pure part: pastes the drawn patch (mean + noise, or the fixed pattern) into a
    /// (3, H, W) image or every image of a (B, 3, H, W) batch.
    pub fn apply_drawn(&self, image: &Tensor, d: &BadNetDraw) -> Result<Tensor> {
        let dims = Dims::of(image, "badnet image")?;
        let at = Placement::At {
            row: d.row,
            col: d.col,
        };
        if self.fixed {
            return apply_patch(image, &d.values, at);
        }
        per_image(image, dims, 0, |img, _| {
            apply_patch(img, &mean_plus_noise(img, &d.values)?, at)
        })
    }

    /// Draws (per image) and applies.
    pub fn apply(&self, image: &Tensor, seed: u64, index: u64) -> Result<Tensor> {
        let dims = Dims::of(image, "badnet image")?;
        per_image(image, dims, index, |img, i| {
            self.apply_drawn(img, &self.draw(dims.h, dims.w, seed, i)?)
        })
    }
}

/// CleanCLIP's random patch: the per-channel mean of a (3, H, W) image plus `noise` (3, p, p).
pub fn mean_plus_noise(image: &Tensor, noise: &Tensor) -> Result<Tensor> {
    let dims = Dims::of(image, "badnet image")?;
    if dims.batch.is_some() || noise.rank() != 3 || noise.dim(0)? != 3 {
        return Err(Error::Invalid(format!(
            "mean_plus_noise: expected a (3, H, W) image and (3, p, p) noise, got {:?} and {:?}",
            image.dims(),
            noise.dims()
        )));
    }
    // The mean in f64: 50k-element f32 sums would drift from torch's pairwise summation.
    let mean = image
        .to_dtype(DType::F64)?
        .flatten_from(1)?
        .mean_keepdim(1)?
        .unsqueeze(2)?
        .to_dtype(DType::F32)?;
    let noise = noise.to_dtype(DType::F32)?.to_device(image.device())?;
    Ok(noise.broadcast_add(&mean)?.to_dtype(image.dtype())?)
}
