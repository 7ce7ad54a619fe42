//! The perturbations of the Perturbation Resistivity (PR) metric, each equal to its torchvision
//! counterpart on float tensors: Gaussian noise, Gaussian blur (`gaussian_blur` with the default
//! sigma and reflect padding), brightness and hue jitter (`adjust_brightness`, `adjust_hue`),
//! horizontal flip; and any backdoor trigger.
//!
//! Specs: `noise:STD`, `blur:K`, `brightness:B` (factor ~ U[1-B, 1+B]), `hue:H` (shift ~ U[-H, H]),
//! `flip`, or a trigger spec. [`Perturbation::parse_list`] reads the CLI's comma-separated list.

use super::{bad_spec, like, per_image, rng, split_spec, to_f32_vec, Dims, Trigger};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone)]
pub enum Perturbation {
    /// x + std * N(0, 1), clamped to [0, 1] so the result is still an image.
    Noise {
        std: f32,
    },
    /// Gaussian blur with an odd `kernel` and torchvision's default sigma for it.
    Blur {
        kernel: usize,
    },
    /// Brightness factor drawn per image from U[1 - max_delta, 1 + max_delta].
    Brightness {
        max_delta: f32,
    },
    /// Hue shift drawn per image from U[-max_shift, max_shift] (in turns, at most 0.5).
    Hue {
        max_shift: f32,
    },
    /// Horizontal flip.
    Flip,
    Trigger(Trigger),
}

impl Perturbation {
    /// Parses one spec: `noise:STD`, `blur:K`, `brightness:B`, `hue:H`, `flip` or a trigger.
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        let (name, rest) = split_spec(spec);
        let value = |what: &str| -> Result<f32> {
            let v = rest.ok_or_else(|| bad_spec(spec, format!("expected `{name}:{what}`")))?;
            let x: f32 = v
                .parse()
                .map_err(|_| bad_spec(spec, format!("`{v}` is not a number")))?;
            if !x.is_finite() {
                return Err(bad_spec(spec, format!("`{v}` is not finite")));
            }
            Ok(x)
        };
        match name {
            "noise" => {
                let std = value("STD")?;
                if std < 0.0 {
                    return Err(bad_spec(spec, "the noise std must be non-negative"));
                }
                Ok(Perturbation::Noise { std })
            }
            "blur" => {
                let v = rest.ok_or_else(|| bad_spec(spec, "expected `blur:K`"))?;
                let kernel: usize = v
                    .parse()
                    .map_err(|_| bad_spec(spec, format!("`{v}` is not a kernel size")))?;
                if kernel.is_multiple_of(2) {
                    return Err(bad_spec(
                        spec,
                        "the blur kernel size must be odd and positive",
                    ));
                }
                Ok(Perturbation::Blur { kernel })
            }
            "brightness" => {
                let max_delta = value("B")?;
                // Factors must stay non-negative, as torchvision requires.
                if !(0.0..=1.0).contains(&max_delta) {
                    return Err(bad_spec(spec, "the brightness range must be in [0, 1]"));
                }
                Ok(Perturbation::Brightness { max_delta })
            }
            "hue" => {
                let max_shift = value("H")?;
                if !(0.0..=0.5).contains(&max_shift) {
                    return Err(bad_spec(spec, "the hue range must be in [0, 0.5]"));
                }
                Ok(Perturbation::Hue { max_shift })
            }
            "flip" if rest.is_none() => Ok(Perturbation::Flip),
            "flip" => Err(bad_spec(spec, "flip takes no options")),
            _ if super::TRIGGER_NAMES.contains(&name) => {
                Ok(Perturbation::Trigger(Trigger::parse(spec)?))
            }
            _ => Err(bad_spec(
                spec,
                "unknown perturbation: expected noise:STD, blur:K, brightness:B, hue:H, flip, \
                 or a trigger (badnet, blended, wanet, lc, patch:FILE)",
            )),
        }
    }

    /// Parses a comma-separated list such as `noise:0.03,blur:3,flip,wanet:k=4,s=0.5`. A piece
    /// of the form `key=value` without `:` continues the previous spec's options, so trigger
    /// options may themselves be comma-separated (a blended file name may not contain commas).
    pub fn parse_list(list: &str) -> Result<Vec<Self>> {
        let mut specs: Vec<String> = Vec::new();
        for piece in list.split(',') {
            let piece = piece.trim();
            if piece.is_empty() {
                return Err(Error::Invalid(format!(
                    "perturbation list `{list}`: empty entry"
                )));
            }
            let continues = !piece.contains(':') && piece.contains('=');
            match specs.last_mut() {
                Some(last) if continues => {
                    last.push(',');
                    last.push_str(piece);
                }
                None if continues => {
                    return Err(Error::Invalid(format!(
                        "perturbation list `{list}`: option `{piece}` has no perturbation before it"
                    )))
                }
                _ => specs.push(piece.to_string()),
            }
        }
        specs.iter().map(|s| Perturbation::parse(s)).collect()
    }

    /// The canonical spec; parses back to the same perturbation.
    pub fn name(&self) -> String {
        match self {
            Perturbation::Noise { std } => format!("noise:{std}"),
            Perturbation::Blur { kernel } => format!("blur:{kernel}"),
            Perturbation::Brightness { max_delta } => format!("brightness:{max_delta}"),
            Perturbation::Hue { max_shift } => format!("hue:{max_shift}"),
            Perturbation::Flip => "flip".into(),
            Perturbation::Trigger(t) => t.name(),
        }
    }

    /// Draws (per image: image `b` of a batch uses `index + b`) and applies.
    pub fn apply(&self, image: &Tensor, seed: u64, index: u64) -> Result<Tensor> {
        let dims = Dims::of(image, "perturbation image")?;
        match self {
            Perturbation::Noise { std } => per_image(image, dims, index, |img, i| {
                add_noise(img, &draw_noise(dims.h, dims.w, seed, i)?, *std)
            }),
            Perturbation::Blur { kernel } => gaussian_blur(image, *kernel),
            Perturbation::Brightness { max_delta } => per_image(image, dims, index, |img, i| {
                adjust_brightness(img, draw_brightness(*max_delta, seed, i))
            }),
            Perturbation::Hue { max_shift } => per_image(image, dims, index, |img, i| {
                adjust_hue(img, draw_hue(*max_shift, seed, i))
            }),
            Perturbation::Flip => hflip(image),
            Perturbation::Trigger(t) => t.apply(image, seed, index),
        }
    }
}

impl FromStr for Perturbation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Perturbation::parse(s)
    }
}

impl fmt::Display for Perturbation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

// ---------------------------------------------------------------- draws

/// The (3, h, w) N(0, 1) noise of image `index`.
pub fn draw_noise(h: usize, w: usize, seed: u64, index: u64) -> Result<Tensor> {
    let mut r = rng(seed, index, "noise");
    let data: Vec<f32> = (0..3 * h * w)
        .map(|_| r.sample::<f32, _>(StandardNormal))
        .collect();
    Ok(Tensor::from_vec(data, (3, h, w), &Device::Cpu)?)
}

/// Uniform in [lo, hi]; a degenerate range is its single value.
fn uniform(r: &mut impl Rng, lo: f32, hi: f32) -> f32 {
    if hi > lo {
        r.random_range(lo..=hi)
    } else {
        lo
    }
}

/// The brightness factor of image `index`, U[1 - max_delta, 1 + max_delta] (never negative).
pub fn draw_brightness(max_delta: f32, seed: u64, index: u64) -> f32 {
    let mut r = rng(seed, index, "brightness");
    uniform(&mut r, (1.0 - max_delta).max(0.0), 1.0 + max_delta)
}

/// The hue shift of image `index`, U[-max_shift, max_shift] within torchvision's [-0.5, 0.5].
pub fn draw_hue(max_shift: f32, seed: u64, index: u64) -> f32 {
    let h = max_shift.clamp(0.0, 0.5);
    let mut r = rng(seed, index, "hue");
    uniform(&mut r, -h, h)
}

// ---------------------------------------------------------------- pure apply functions

/// clamp(x + std * noise, 0, 1); `noise` is (3, H, W) (shared by a batch) or shaped like `image`.
pub fn add_noise(image: &Tensor, noise: &Tensor, std: f32) -> Result<Tensor> {
    let dims = Dims::of(image, "noise image")?;
    let n = 3 * dims.plane();
    if noise.dims() != [3, dims.h, dims.w] && noise.dims() != image.dims() {
        return Err(Error::Invalid(format!(
            "add_noise: noise shape {:?} does not match image shape {:?}",
            noise.dims(),
            image.dims()
        )));
    }
    let x = to_f32_vec(image)?;
    let z = to_f32_vec(noise)?;
    let shared = z.len() != x.len();
    let out = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let e = if shared { z[i % n] } else { z[i] };
            (v + std * e).clamp(0.0, 1.0)
        })
        .collect();
    like(out, image)
}

/// torchvision's default sigma for a kernel size: `0.3 * ((k - 1) * 0.5 - 1) + 0.8`, written
/// as torchvision's `k * 0.15 + 0.35` so the f64 rounding is identical.
pub fn default_sigma(kernel: usize) -> f64 {
    kernel as f64 * 0.15 + 0.35
}

/// torchvision's `_get_gaussian_kernel1d` in f32: exp(-x² / 2σ²) on linspace(-(k-1)/2, (k-1)/2),
/// normalised to sum 1.
pub fn gaussian_kernel1d(kernel: usize, sigma: f64) -> Vec<f32> {
    let half = (kernel as f32 - 1.0) * 0.5;
    let sigma = sigma as f32;
    let step = if kernel > 1 {
        2.0 * half / (kernel - 1) as f32
    } else {
        0.0
    };
    let pdf: Vec<f32> = (0..kernel)
        .map(|i| {
            // torch.linspace fills from both ends towards the middle.
            let x = if i < kernel / 2 {
                -half + step * i as f32
            } else {
                half - step * (kernel - 1 - i) as f32
            };
            let z = x / sigma;
            (-0.5 * (z * z)).exp()
        })
        .collect();
    let sum: f32 = pdf.iter().sum();
    pdf.iter().map(|p| p / sum).collect()
}

/// `torchvision.transforms.functional.gaussian_blur(img, [k, k])`: the default sigma, the 2-D
/// kernel as the outer product of the 1-D one, reflect padding (no edge repeat) of k // 2.
pub fn gaussian_blur(image: &Tensor, kernel: usize) -> Result<Tensor> {
    gaussian_blur_sigma(image, kernel, default_sigma(kernel))
}

/// [`gaussian_blur`] with an explicit sigma.
pub fn gaussian_blur_sigma(image: &Tensor, kernel: usize, sigma: f64) -> Result<Tensor> {
    let dims = Dims::of(image, "blur image")?;
    let pad = kernel / 2;
    if kernel.is_multiple_of(2) || !(sigma > 0.0 && sigma.is_finite()) {
        return Err(Error::Invalid(format!(
            "gaussian_blur: kernel {kernel} must be odd and sigma {sigma} positive"
        )));
    }
    if pad >= dims.h || pad >= dims.w {
        return Err(Error::Invalid(format!(
            "gaussian_blur: reflect padding {pad} needs an image larger than {pad} px, got {} x {}",
            dims.h, dims.w
        )));
    }
    let k1 = gaussian_kernel1d(kernel, sigma);
    let k2: Vec<f32> = k1
        .iter()
        .flat_map(|a| k1.iter().map(move |b| a * b))
        .collect();
    let (h, w) = (dims.h, dims.w);
    // Reflect about the edge pixel: -1 → 1, n → n - 2 (torch's "reflect").
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let r = if i < 0 {
            -i
        } else if i >= n {
            2 * (n - 1) - i
        } else {
            i
        };
        r as usize
    };
    let rows: Vec<Vec<usize>> = (0..h)
        .map(|y| {
            (0..kernel)
                .map(|i| reflect(y as isize + i as isize - pad as isize, h))
                .collect()
        })
        .collect();
    let cols: Vec<Vec<usize>> = (0..w)
        .map(|x| {
            (0..kernel)
                .map(|j| reflect(x as isize + j as isize - pad as isize, w))
                .collect()
        })
        .collect();
    let x = to_f32_vec(image)?;
    let mut out = vec![0f32; x.len()];
    for (src, dst) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w)) {
        for y in 0..h {
            for xx in 0..w {
                let mut acc = 0f32;
                for (i, &ry) in rows[y].iter().enumerate() {
                    let row = &src[ry * w..(ry + 1) * w];
                    for (j, &cx) in cols[xx].iter().enumerate() {
                        acc += k2[i * kernel + j] * row[cx];
                    }
                }
                dst[y * w + xx] = acc;
            }
        }
    }
    like(out, image)
}

/// `torchvision.transforms.functional.adjust_brightness` on floats: clamp(factor * x, 0, 1).
pub fn adjust_brightness(image: &Tensor, factor: f32) -> Result<Tensor> {
    Dims::of(image, "brightness image")?;
    if !(factor >= 0.0 && factor.is_finite()) {
        return Err(Error::Invalid(format!(
            "adjust_brightness: factor {factor} must be finite and non-negative"
        )));
    }
    let x = to_f32_vec(image)?;
    like(
        x.iter().map(|v| (factor * v).clamp(0.0, 1.0)).collect(),
        image,
    )
}

/// `torchvision.transforms.functional.adjust_hue` on floats: RGB → HSV, h ← (h + factor) mod 1,
/// HSV → RGB, with torchvision's exact formulas (grey pixels keep h = 0, s = 0).
pub fn adjust_hue(image: &Tensor, factor: f32) -> Result<Tensor> {
    let dims = Dims::of(image, "hue image")?;
    if !(-0.5..=0.5).contains(&factor) {
        return Err(Error::Invalid(format!(
            "adjust_hue: factor {factor} is not in [-0.5, 0.5]"
        )));
    }
    let n = dims.plane();
    let mut x = to_f32_vec(image)?;
    for img in x.chunks_exact_mut(3 * n) {
        for i in 0..n {
            let (h, s, v) = rgb_to_hsv(img[i], img[n + i], img[2 * n + i]);
            // Python's % (torch.remainder): the result takes the divisor's sign.
            let mut h = (h + factor) % 1.0;
            if h < 0.0 {
                h += 1.0;
            }
            let (r, g, b) = hsv_to_rgb(h, s, v);
            img[i] = r;
            img[n + i] = g;
            img[2 * n + i] = b;
        }
    }
    like(x, image)
}

/// torchvision's `_rgb2hsv`, operation for operation.
fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let div = if eqc { 1.0 } else { cr };
    let rc = (maxc - r) / div;
    let gc = (maxc - g) / div;
    let bc = (maxc - b) / div;
    let hr = if maxc == r { bc - gc } else { 0.0 };
    let hg = if maxc == g && maxc != r {
        2.0 + rc - bc
    } else {
        0.0
    };
    let hb = if maxc != g && maxc != r {
        4.0 + gc - rc
    } else {
        0.0
    };
    let h = hr + hg + hb;
    // torch.fmod, which Rust's % on floats is.
    let h = (h / 6.0 + 1.0) % 1.0;
    (h, s, maxc)
}

/// torchvision's `_hsv2rgb`.
fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let i = (i as i32).rem_euclid(6);
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match i {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// Horizontal flip (the width axis), on any device.
pub fn hflip(image: &Tensor) -> Result<Tensor> {
    let dims = Dims::of(image, "flip image")?;
    let last = if dims.batch.is_some() { 3 } else { 2 };
    Ok(image.flip(&[last])?)
}
