//! Label-consistent backdoor (Turner et al. 2019): a 3 x 3 black/white checkerboard in the four
//! corners of images that were first made hard to classify by PGD.
//!
//! Semantics (Turner et al.'s, also their reduced-amplitude variant): the pattern P is +1 on
//! white and -1 on black cells and x' = clamp(x + amp * P, 0, 1) on the pattern's pixels only.
//! With amp = 1 (the default) this sets white cells to exactly 1 and black cells to exactly 0,
//! i.e. the original pasted pattern; amp = 16/255, 32/255, 64/255 are the paper's fainter ones.
//! The corner pixel of each corner is white (the 3-cell pattern is symmetric, so every corner
//! looks the same). `cell` scales the pattern for larger images: each cell is `cell` x `cell` px.
//!
//! The PGD part needs model gradients; [`pgd_step`] is its pure update.

use super::{bad_spec, like, options, parse_num, to_f32_vec, Dims};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};

/// Cells per side of the checkerboard.
pub const CELLS: usize = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct LabelConsistent {
    /// Perturbation amplitude in [0, 1]; 1 replaces the pixels by black/white.
    pub amplitude: f32,
    /// Side of one checkerboard cell in pixels.
    pub cell: usize,
}

impl Default for LabelConsistent {
    fn default() -> Self {
        LabelConsistent {
            amplitude: 1.0,
            cell: 1,
        }
    }
}

impl LabelConsistent {
    /// Options: `amp=X`, `cell=N`.
    pub(crate) fn parse_options(spec: &str, rest: Option<&str>) -> Result<Self> {
        let mut t = LabelConsistent::default();
        for (key, value) in options(spec, rest)? {
            match key {
                "amp" => t.amplitude = parse_num(spec, key, value)?,
                "cell" => t.cell = parse_num(spec, key, value)?,
                _ => return Err(bad_spec(spec, format!("unknown lc option `{key}`"))),
            }
        }
        if !(t.amplitude > 0.0 && t.amplitude <= 1.0) {
            return Err(bad_spec(spec, "amp must be in (0, 1]"));
        }
        if t.cell == 0 {
            return Err(bad_spec(spec, "cell must be positive"));
        }
        Ok(t)
    }

    pub fn name(&self) -> String {
        let mut opts = Vec::new();
        if self.amplitude != 1.0 {
            opts.push(format!("amp={}", self.amplitude));
        }
        if self.cell != 1 {
            opts.push(format!("cell={}", self.cell));
        }
        if opts.is_empty() {
            "lc".into()
        } else {
            format!("lc:{}", opts.join(","))
        }
    }

    /// No randomness: the same corners on every image.
    pub fn apply(&self, image: &Tensor) -> Result<Tensor> {
        apply_corners(image, self.amplitude, self.cell)
    }
}

/// The (h, w) pattern: +1 white, -1 black, 0 outside the four corner checkerboards.
pub fn corner_pattern(h: usize, w: usize, cell: usize) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        corner_values(h, w, cell)?,
        (h, w),
        &Device::Cpu,
    )?)
}

fn corner_values(h: usize, w: usize, cell: usize) -> Result<Vec<f32>> {
    let side = CELLS * cell;
    if cell == 0 || 2 * side > h || 2 * side > w {
        return Err(Error::Invalid(format!(
            "label-consistent: four {side} px corner patterns do not fit a {h} x {w} image"
        )));
    }
    let mut p = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            // Distance from the nearest vertical/horizontal edge, so each corner starts white.
            let dy = y.min(h - 1 - y);
            let dx = x.min(w - 1 - x);
            if dy < side && dx < side {
                p[y * w + x] = if (dy / cell + dx / cell).is_multiple_of(2) {
                    1.0
                } else {
                    -1.0
                };
            }
        }
    }
    Ok(p)
}

/// The pure part: x' = clamp(x + amplitude * P, 0, 1) on the corner pixels of a (3, H, W) image
/// or (B, 3, H, W) batch; other pixels are left untouched (not clamped).
pub fn apply_corners(image: &Tensor, amplitude: f32, cell: usize) -> Result<Tensor> {
    let dims = Dims::of(image, "label-consistent image")?;
    let p = corner_values(dims.h, dims.w, cell)?;
    let mut x = to_f32_vec(image)?;
    let n = dims.plane();
    for (i, v) in x.iter_mut().enumerate() {
        let q = p[i % n];
        if q != 0.0 {
            *v = (*v + amplitude * q).clamp(0.0, 1.0);
        }
    }
    like(x, image)
}

/// One L∞ PGD step: x' = x + step * sign(grad), projected onto the eps-ball around `orig` and
/// onto [0, 1]. Ascent: pass the gradient of the loss to maximise (negate it to descend).
/// sign(0) = 0, as `torch.sign`. All three tensors must have the same shape.
pub fn pgd_step(
    image: &Tensor,
    grad: &Tensor,
    orig: &Tensor,
    eps: f32,
    step: f32,
) -> Result<Tensor> {
    if image.dims() != grad.dims() || image.dims() != orig.dims() {
        return Err(Error::Invalid(format!(
            "pgd_step: image {:?}, gradient {:?} and original {:?} must have the same shape",
            image.dims(),
            grad.dims(),
            orig.dims()
        )));
    }
    if !(eps >= 0.0 && eps.is_finite() && step >= 0.0 && step.is_finite()) {
        return Err(Error::Invalid(format!(
            "pgd_step: eps ({eps}) and step ({step}) must be finite and non-negative"
        )));
    }
    let grad = grad.to_dtype(image.dtype())?;
    let orig = orig.to_dtype(image.dtype())?;
    let moved = (image + grad.sign()?.affine(step as f64, 0.0)?)?;
    let lo = orig.affine(1.0, -(eps as f64))?;
    let hi = orig.affine(1.0, eps as f64)?;
    Ok(moved.maximum(&lo)?.minimum(&hi)?.clamp(0f32, 1f32)?)
}
