//! WaNet (Nguyen & Tran 2021): an imperceptible warp of the whole image.
//!
//! A k x k x 2 control grid of U(-1, 1) noise, normalised by its mean absolute value, is
//! upsampled to H x W (bicubic, as `F.interpolate(mode="bicubic", align_corners=True)`); the
//! sampling grid is clamp(identity + s * noise / H, -1, 1) and the image is resampled with
//! `F.grid_sample(mode="bilinear", padding_mode="zeros", align_corners=True)`. Channel 0 of the
//! control is the x (width) displacement, as `grid_sample` reads the last grid axis.
//!
//! Defaults are CleanCLIP's (k = H, i.e. 224 at 224 px, s = 1); BackdoorBench uses k = 4,
//! s = 0.5. The field is drawn once per attack from the seed: every image gets the same warp,
//! or read from a CleanCLIP or BackdoorBench grid file (`grid=FILE`, see [`super::wanet_file`]).

use super::wanet_file::read_noise_grid;
use super::wanet_grid::{linspace_pm1, NoiseGrid};
use super::{bad_spec, options, parse_num, rng, to_f32_vec, Dims};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use rand::Rng;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct WaNet {
    /// Control grid side; `None`: the image height.
    pub k: Option<usize>,
    /// Warp strength.
    pub s: f32,
    /// BackdoorBench's `grid_rescale` (1 everywhere it is used).
    pub rescale: f32,
    /// A noise grid saved by CleanCLIP or BackdoorBench, used instead of the seeded draw.
    pub file: Option<Arc<(PathBuf, NoiseGrid)>>,
}

impl Default for WaNet {
    fn default() -> Self {
        WaNet {
            k: None,
            s: 1.0,
            rescale: 1.0,
            file: None,
        }
    }
}

impl WaNet {
    /// Options: `k=N`, `s=X`, `rescale=X`, `grid=FILE` (the file is read here, so a missing or
    /// broken one fails at parse time).
    pub(crate) fn parse_options(spec: &str, rest: Option<&str>) -> Result<Self> {
        let mut t = WaNet::default();
        for (key, value) in options(spec, rest)? {
            match key {
                "k" => t.k = Some(parse_num(spec, key, value)?),
                "s" => t.s = parse_num(spec, key, value)?,
                "rescale" => t.rescale = parse_num(spec, key, value)?,
                "grid" => {
                    let file = PathBuf::from(
                        value.ok_or_else(|| bad_spec(spec, "`grid` needs a .pt file"))?,
                    );
                    let grid = read_noise_grid(&file)?;
                    t.file = Some(Arc::new((file, grid)));
                }
                _ => return Err(bad_spec(spec, format!("unknown wanet option `{key}`"))),
            }
        }
        if t.k == Some(0) {
            return Err(bad_spec(spec, "k must be positive"));
        }
        if t.k.is_some() && t.file.is_some() {
            return Err(bad_spec(
                spec,
                "`k` shapes a drawn grid; a grid file has its own",
            ));
        }
        if !t.s.is_finite() || !t.rescale.is_finite() {
            return Err(bad_spec(spec, "s and rescale must be finite"));
        }
        Ok(t)
    }

    pub fn name(&self) -> String {
        let mut opts = Vec::new();
        if let Some(file) = &self.file {
            opts.push(format!("grid={}", file.0.display()));
        }
        if let Some(k) = self.k {
            opts.push(format!("k={k}"));
        }
        if self.s != 1.0 {
            opts.push(format!("s={}", self.s));
        }
        if self.rescale != 1.0 {
            opts.push(format!("rescale={}", self.rescale));
        }
        if opts.is_empty() {
            "wanet".into()
        } else {
            format!("wanet:{}", opts.join(","))
        }
    }

    /// The control grid side for an image of height `h`.
    pub fn control_size(&self, h: usize) -> usize {
        self.k.unwrap_or(h)
    }

    /// The raw (2, k, k) U(-1, 1) control noise of the attack (independent of the image index).
    pub fn draw_control(&self, h: usize, seed: u64) -> Result<Tensor> {
        let k = self.control_size(h);
        let mut r = rng(seed, 0, "wanet");
        let data: Vec<f32> = (0..2 * k * k)
            .map(|_| r.random::<f32>() * 2.0 - 1.0)
            .collect();
        Ok(Tensor::from_vec(data, (2, k, k), &Device::Cpu)?)
    }

    /// The (h, w, 2) upsampled, normalised noise of the attack: `noise[(y * w + x) * 2 + c]`,
    /// drawn from `seed` or read from the grid file (which must be of the image's size).
    pub fn noise(&self, h: usize, w: usize, seed: u64) -> Result<NoiseGrid> {
        match self.file_noise(h, w)? {
            Some(grid) => Ok(grid.clone()),
            None => upsampled_noise(&self.draw_control(h, seed)?, h, w),
        }
    }

    /// The grid file's noise, checked against the image size (`None` without a file).
    fn file_noise(&self, h: usize, w: usize) -> Result<Option<&NoiseGrid>> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let (path, grid) = (&file.0, &file.1);
        if (grid.h, grid.w) != (h, w) {
            return Err(Error::Invalid(format!(
                "the WaNet grid in {} was made for {} x {} images; these are warped at \
                 {h} x {w} (the model's input size), and a grid is not resized",
                path.display(),
                grid.h,
                grid.w
            )));
        }
        Ok(Some(grid))
    }

    /// The (h, w, 2) sampling grid of the attack. Callers warping many batches may keep it and
    /// call [`grid_sample`] directly.
    pub fn grid(&self, h: usize, w: usize, seed: u64) -> Result<Tensor> {
        // A file's grid is used where it lies (no copy per image).
        match self.file_noise(h, w)? {
            Some(grid) => sampling_grid(grid, self.s, self.rescale),
            None => sampling_grid(&self.noise(h, w, seed)?, self.s, self.rescale),
        }
    }

    /// Warps a (3, H, W) image or (B, 3, H, W) batch.
    pub fn apply(&self, image: &Tensor, seed: u64) -> Result<Tensor> {
        let dims = Dims::of(image, "wanet image")?;
        grid_sample(image, &self.grid(dims.h, dims.w, seed)?)
    }

    /// WaNet's noise mode: the attack's warp with per-pixel U(-1, 1) / H noise added to its
    /// sampling grid (clamped to [-1, 1]), as Nguyen & Tran's `cross_ratio` images, which keep
    /// their label. The noise is drawn from `(seed, index)`: one image, one noise. Together they
    /// teach that this warp, not any warp, is the trigger.
    pub fn apply_with_noise(&self, image: &Tensor, seed: u64, index: u64) -> Result<Tensor> {
        let dims = Dims::of(image, "wanet image")?;
        let (h, w) = (dims.h, dims.w);
        let mut r = rng(seed, index, "wanet-noise-mode");
        let noise: Vec<f32> = (0..h * w * 2)
            .map(|_| (r.random::<f32>() * 2.0 - 1.0) / h as f32)
            .collect();
        let noise = Tensor::from_vec(noise, (h, w, 2), &Device::Cpu)?;
        let grid = (self.grid(h, w, seed)? + noise)?.clamp(-1f32, 1f32)?;
        grid_sample(image, &grid)
    }
}

/// The pure part: raw (2, kh, kw) control noise → (h, w, 2) grid, as BackdoorBench/CleanCLIP:
/// `clamp(identity + s * upsample(ins / mean|ins|) / h, -1, 1)`.
pub fn warp_grid(control: &Tensor, h: usize, w: usize, s: f32) -> Result<Tensor> {
    sampling_grid(&upsampled_noise(control, h, w)?, s, 1.0)
}

/// Raw (2, kh, kw) control noise → the (h, w, 2) noise grid: `upsample(ins / mean|ins|)` (bicubic,
/// align_corners), channels last, as the projects save it.
pub fn upsampled_noise(control: &Tensor, h: usize, w: usize) -> Result<NoiseGrid> {
    if control.rank() != 3 || control.dim(0)? != 2 || h == 0 || w == 0 {
        return Err(Error::Invalid(format!(
            "wanet: expected a (2, k, k) control grid and a positive size, got {:?} for {h} x {w}",
            control.dims()
        )));
    }
    let c = to_f32_vec(control)?;
    let mean_abs = (c.iter().map(|v| v.abs() as f64).sum::<f64>() / c.len() as f64) as f32;
    if !(mean_abs > 0.0 && mean_abs.is_finite()) {
        return Err(Error::Invalid(format!(
            "wanet: the control grid's mean absolute value is {mean_abs}; it cannot be normalised"
        )));
    }
    let norm: Vec<f32> = c.iter().map(|v| v / mean_abs).collect();
    let norm = Tensor::from_vec(norm, control.dims(), &Device::Cpu)?;
    let up = to_f32_vec(&upsample_bicubic(&norm, h, w)?)?;
    let noise = (0..h * w).flat_map(|i| [up[i], up[h * w + i]]).collect();
    Ok(NoiseGrid { h, w, noise })
}

/// Noise grid → sampling grid: `clamp((identity + s * noise / h) * rescale, -1, 1)`, the
/// identity's channel 0 the column coordinate (x), as `grid_sample` reads it.
pub fn sampling_grid(noise: &NoiseGrid, s: f32, rescale: f32) -> Result<Tensor> {
    let (h, w) = (noise.h, noise.w);
    let (ys, xs) = (linspace_pm1(h), linspace_pm1(w));
    let hf = h as f32;
    let mut grid = vec![0f32; h * w * 2];
    for (y, gy) in ys.iter().enumerate() {
        for (x, gx) in xs.iter().enumerate() {
            let i = y * w + x;
            let n = &noise.noise[2 * i..2 * i + 2];
            grid[2 * i] = ((gx + s * n[0] / hf) * rescale).clamp(-1.0, 1.0);
            grid[2 * i + 1] = ((gy + s * n[1] / hf) * rescale).clamp(-1.0, 1.0);
        }
    }
    Ok(Tensor::from_vec(grid, (h, w, 2), &Device::Cpu)?)
}

/// Cubic convolution weights of the four taps around fraction `t`, with torch's a = -0.75.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far((1.0 - t) + 1.0)]
}

/// Tap indices (clamped to the border) and weights of each output position, align_corners=True.
fn cubic_taps(input: usize, output: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = if output > 1 {
        (input - 1) as f32 / (output - 1) as f32
    } else {
        0.0
    };
    (0..output)
        .map(|o| {
            let real = scale * o as f32;
            let base = real.floor();
            let t = (real - base).clamp(0.0, 1.0);
            let base = base as isize;
            let idx = std::array::from_fn(|j| {
                (base - 1 + j as isize).clamp(0, input as isize - 1) as usize
            });
            (idx, cubic_weights(t))
        })
        .collect()
}

/// `F.interpolate(x[None], size=(out_h, out_w), mode="bicubic", align_corners=True)[0]` for a
/// (C, h, w) tensor.
pub fn upsample_bicubic(input: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (c, h, w) = input.dims3().map_err(|_| {
        Error::Invalid(format!(
            "upsample_bicubic: expected (C, h, w), got {:?}",
            input.dims()
        ))
    })?;
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(Error::Invalid(format!(
            "upsample_bicubic: empty size {h} x {w} → {out_h} x {out_w}"
        )));
    }
    let x = to_f32_vec(input)?;
    let (ty, tx) = (cubic_taps(h, out_h), cubic_taps(w, out_w));
    let mut out = vec![0f32; c * out_h * out_w];
    for ch in 0..c {
        let src = &x[ch * h * w..(ch + 1) * h * w];
        for (oy, (iy, wy)) in ty.iter().enumerate() {
            for (ox, (ix, wx)) in tx.iter().enumerate() {
                // Rows first, then columns, summed in tap order like torch's nested interpolation.
                let mut acc = 0f32;
                for j in 0..4 {
                    let row = &src[iy[j] * w..(iy[j] + 1) * w];
                    let mut r = 0f32;
                    for i in 0..4 {
                        r += row[ix[i]] * wx[i];
                    }
                    acc += r * wy[j];
                }
                out[(ch * out_h + oy) * out_w + ox] = acc;
            }
        }
    }
    Ok(Tensor::from_vec(out, (c, out_h, out_w), &Device::Cpu)?)
}

/// `F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)` for a
/// (3, H, W) image or (B, 3, H, W) batch and one (Ho, Wo, 2) grid shared by the batch; the last
/// grid axis is (x, y) in [-1, 1].
pub fn grid_sample(image: &Tensor, grid: &Tensor) -> Result<Tensor> {
    let dims = Dims::of(image, "grid_sample image")?;
    let (gh, gw) = match *grid.dims() {
        [gh, gw, 2] => (gh, gw),
        _ => {
            return Err(Error::Invalid(format!(
                "grid_sample: expected an (H, W, 2) grid, got {:?}",
                grid.dims()
            )))
        }
    };
    let (h, w) = (dims.h, dims.w);
    let x = to_f32_vec(image)?;
    let g = to_f32_vec(grid)?;
    let planes = dims.images() * 3;
    let (sx, sy) = ((w - 1) as f32 / 2.0, (h - 1) as f32 / 2.0);
    let mut out = vec![0f32; planes * gh * gw];
    for i in 0..gh * gw {
        let ix = (g[2 * i] + 1.0) * sx;
        let iy = (g[2 * i + 1] + 1.0) * sy;
        let (x0, y0) = (ix.floor(), iy.floor());
        let (fx, fy) = (ix - x0, iy - y0);
        let (ex, sy_) = (1.0 - fx, 1.0 - fy);
        let weights = [sy_ * ex, sy_ * fx, fy * ex, fy * fx];
        let (x0, y0) = (x0 as isize, y0 as isize);
        let corners = [(y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)];
        // Out-of-image corners read as zero (padding_mode="zeros").
        let offsets = corners.map(|(yy, xx)| {
            (yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w)
                .then(|| yy as usize * w + xx as usize)
        });
        for p in 0..planes {
            let src = &x[p * h * w..(p + 1) * h * w];
            let mut acc = 0f32;
            for (wt, off) in weights.iter().zip(&offsets) {
                if let Some(o) = off {
                    acc += src[*o] * wt;
                }
            }
            out[p * gh * gw + i] = acc;
        }
    }
    let shape: Vec<usize> = match dims.batch {
        Some(b) => vec![b, 3, gh, gw],
        None => vec![3, gh, gw],
    };
    let t = Tensor::from_vec(out, shape, &Device::Cpu)?;
    Ok(t.to_dtype(image.dtype())?.to_device(image.device())?)
}
