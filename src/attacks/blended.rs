//! Blended (Chen et al. 2017): x' = clamp((1 - a) x + a P, 0, 1) with a = 0.2.
//!
//! Default: CleanCLIP's `patch_type="blended"`, where P is U(0, 1) noise of the image's size drawn
//! per image. `blended:FILE`: P is a fixed image file, resized to the image with a Catmull-Rom
//! cubic (the `image` crate's, as in preprocessing).

use super::{like, per_image, rng, to_f32_vec, Dims};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use image::{imageops::FilterType, RgbImage};
use rand::Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// CleanCLIP's blend weight of the pattern.
pub const DEFAULT_ALPHA: f32 = 0.2;

#[derive(Debug, Clone)]
pub struct Blended {
    /// Weight of the pattern.
    pub alpha: f32,
    pub pattern: BlendPattern,
}

#[derive(Debug, Clone)]
pub enum BlendPattern {
    /// Fresh U(0, 1) noise per image.
    Noise,
    /// One U(0, 1) noise pattern for the whole attack, drawn from the seed (a fixed pattern, as
    /// BackdoorBench's blended attack uses, without needing an image file).
    FixedNoise,
    /// A decoded pattern file; resized copies are cached per image size, since every image of
    /// an evaluation would otherwise resize it again.
    File {
        path: PathBuf,
        image: Arc<RgbImage>,
        resized: Arc<Mutex<HashMap<(usize, usize), Tensor>>>,
    },
}

impl Blended {
    /// CleanCLIP's default: noise pattern, alpha 0.2.
    pub fn noise() -> Self {
        Blended {
            alpha: DEFAULT_ALPHA,
            pattern: BlendPattern::Noise,
        }
    }

    /// A fixed pattern from an image file (JPEG/PNG/WebP), decoded now.
    pub fn from_file(path: &Path) -> Result<Self> {
        let image = crate::image::load_rgb(path)?;
        Ok(Blended {
            alpha: DEFAULT_ALPHA,
            pattern: BlendPattern::File {
                path: path.to_path_buf(),
                image: Arc::new(image),
                resized: Arc::default(),
            },
        })
    }

    pub fn name(&self) -> String {
        match &self.pattern {
            BlendPattern::Noise => "blended".into(),
            BlendPattern::FixedNoise => "blended:fixed".into(),
            BlendPattern::File { path, .. } => format!("blended:{}", path.display()),
        }
    }

    /// The (3, h, w) pattern of image `index`, values in [0, 1].
    pub fn pattern(&self, h: usize, w: usize, seed: u64, index: u64) -> Result<Tensor> {
        match &self.pattern {
            BlendPattern::FixedNoise => {
                let mut r = rng(seed, 0, "blended-fixed");
                let data: Vec<f32> = (0..3 * h * w).map(|_| r.random::<f32>()).collect();
                Ok(Tensor::from_vec(data, (3, h, w), &Device::Cpu)?)
            }
            BlendPattern::Noise => {
                let mut r = rng(seed, index, "blended");
                let data: Vec<f32> = (0..3 * h * w).map(|_| r.random::<f32>()).collect();
                Ok(Tensor::from_vec(data, (3, h, w), &Device::Cpu)?)
            }
            BlendPattern::File { image, resized, .. } => {
                // A poisoned lock only means another thread panicked mid-insert; entries are whole.
                let mut cache = resized.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(t) = cache.get(&(h, w)) {
                    return Ok(t.clone());
                }
                let t = resize_pattern(image, h, w)?;
                cache.insert((h, w), t.clone());
                Ok(t)
            }
        }
    }

    /// Draws (per image for noise) and blends.
    pub fn apply(&self, image: &Tensor, seed: u64, index: u64) -> Result<Tensor> {
        let dims = Dims::of(image, "blended image")?;
        per_image(image, dims, index, |img, i| {
            blend(img, &self.pattern(dims.h, dims.w, seed, i)?, self.alpha)
        })
    }
}

/// The file pattern at h x w, as a (3, h, w) tensor in [0, 1].
fn resize_pattern(image: &RgbImage, h: usize, w: usize) -> Result<Tensor> {
    let (wu, hu) = (
        u32::try_from(w).map_err(|_| Error::Invalid(format!("image width {w} too large")))?,
        u32::try_from(h).map_err(|_| Error::Invalid(format!("image height {h} too large")))?,
    );
    let img = if image.dimensions() == (wu, hu) {
        image.clone()
    } else {
        image::imageops::resize(image, wu, hu, FilterType::CatmullRom)
    };
    crate::image::to_unit_tensor(&img, &Device::Cpu)
}

/// The pure part: clamp((1 - alpha) * image + alpha * pattern, 0, 1), as CleanCLIP's
/// `torch.clip(0.2 * noise + 0.8 * image, 0, 1)`. `pattern` is (3, H, W) (shared by a batch) or
/// shaped like `image`.
pub fn blend(image: &Tensor, pattern: &Tensor, alpha: f32) -> Result<Tensor> {
    let dims = Dims::of(image, "blended image")?;
    let pd = pattern.dims();
    let n = 3 * dims.plane();
    if pd != [3, dims.h, dims.w] && pd != image.dims() {
        return Err(Error::Invalid(format!(
            "blend: pattern shape {pd:?} does not match image shape {:?}",
            image.dims()
        )));
    }
    let x = to_f32_vec(image)?;
    let p = to_f32_vec(pattern)?;
    let keep = 1.0 - alpha;
    // A single pattern repeats over the batch; a batch of patterns pairs up element by element.
    let shared = p.len() != x.len();
    let out = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let q = if shared { p[i % n] } else { p[i] };
            (alpha * q + keep * v).clamp(0.0, 1.0)
        })
        .collect();
    like(out, image)
}
