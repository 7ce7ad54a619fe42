//! Decoding and CLIP preprocessing, identical in effect to transformers' `CLIPImageProcessor`:
//! RGB → resize the shortest edge with bicubic (a = -0.5, antialiased when shrinking, as PIL) →
//! centre crop → /255 → normalise with the CLIP mean and std.

pub mod pil;

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use image::RgbImage;
use std::path::Path;

pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Decodes a JPEG, PNG or WebP file (format sniffed from the bytes) into 8-bit RGB; grey is
/// expanded and transparency composited over white, as transformers' `convert_to_rgb`.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    if !path.is_file() {
        return Err(Error::MissingFile(path.to_path_buf()));
    }
    let bad = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    let img = reader.decode().map_err(|e| bad(e.to_string()))?;
    if img.color().has_alpha() {
        Ok(composite_on_white(&img.to_rgba8()))
    } else {
        Ok(img.to_rgb8())
    }
}

/// Alpha-composites over white, as transformers' `convert_to_rgb` (PIL `alpha_composite` on an
/// opaque white background): c' = round((c * a + 255 * (255 - a)) / 255).
pub fn composite_on_white(img: &image::RgbaImage) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let [r, g, b, a] = img.get_pixel(x, y).0;
        let a = a as u32;
        let mix = |c: u8| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        image::Rgb([mix(r), mix(g), mix(b)])
    })
}

/// Output size of transformers' `get_resize_output_image_size(…, default_to_square=False)`:
/// the short side becomes `size`, the long side `int(size * long / short)`.
pub fn shortest_edge_size(width: u32, height: u32, size: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (size as u64 * long as u64 / short as u64) as u32;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// Bicubic resize so the shortest edge is `size`, bit-exact with Pillow's (what CLIP's
/// preprocessing calls): see [`pil`].
pub fn resize_shortest_edge(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = shortest_edge_size(img.width(), img.height(), size);
    if (w, h) == img.dimensions() {
        return img.clone();
    }
    pil::resize_bicubic(img, w, h)
}

/// Centre crop with transformers' rounding: top = (h - crop) // 2, left = (w - crop) // 2.
/// An image smaller than the crop is first padded with zeros, as transformers does.
pub fn center_crop(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w >= size && h >= size {
        return image::imageops::crop_imm(img, (w - size) / 2, (h - size) / 2, size, size)
            .to_image();
    }
    let mut out = RgbImage::new(size, size);
    let (ox, oy) = ((size.saturating_sub(w)) / 2, (size.saturating_sub(h)) / 2);
    let (sx, sy) = ((w.saturating_sub(size)) / 2, (h.saturating_sub(size)) / 2);
    for y in 0..h.min(size) {
        for x in 0..w.min(size) {
            out.put_pixel(ox + x, oy + y, *img.get_pixel(sx + x, sy + y));
        }
    }
    out
}

/// An RGB image as a (3, H, W) f32 tensor in [0, 1]: the space triggers and perturbations act in.
pub fn to_unit_tensor(img: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    let (w, h) = (w as usize, h as usize);
    let mut data = vec![0f32; 3 * h * w];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            data[c * h * w + i] = px.0[c] as f32 / 255.0;
        }
    }
    Ok(Tensor::from_vec(data, (3, h, w), device)?)
}

/// (…, 3, H, W) in [0, 1] → CLIP-normalised pixels.
pub fn normalize(unit: &Tensor) -> Result<Tensor> {
    normalize_with(unit, &crate::model::Preprocess::default())
}

/// (…, 3, H, W) in [0, 1] → pixels normalised with a model's own mean and std
/// (`model.config().preprocess`).
pub fn normalize_with(unit: &Tensor, p: &crate::model::Preprocess) -> Result<Tensor> {
    let device = unit.device();
    let mean = Tensor::from_slice(&p.mean, (3, 1, 1), device)?.to_dtype(unit.dtype())?;
    let std = Tensor::from_slice(&p.std, (3, 1, 1), device)?.to_dtype(unit.dtype())?;
    Ok(unit.broadcast_sub(&mean)?.broadcast_div(&std)?)
}

/// How far an image may be from the model's input size before a warning: a shortest side
/// below `size / FAR_BELOW` (little left to see once upscaled), or a longest side above
/// `size * FAR_ABOVE` (detail lost, and slow to resize).
const FAR_BELOW: u32 = 4;
const FAR_ABOVE: u32 = 32;

/// Warns on stderr (once per process for each of too small and too large, naming the first
/// file) when an image is far from the model's `size`: it is still used, resized as CLIP does.
pub fn warn_if_far_from_size(path: &Path, (w, h): (u32, u32), size: u32) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SMALL: AtomicBool = AtomicBool::new(false);
    static LARGE: AtomicBool = AtomicBool::new(false);
    let (short, long) = (w.min(h), w.max(h));
    let (flag, what) = if short.saturating_mul(FAR_BELOW) < size {
        (&SMALL, "far below")
    } else if long > size.saturating_mul(FAR_ABOVE) {
        (&LARGE, "far above")
    } else {
        return;
    };
    if !flag.swap(true, Ordering::Relaxed) {
        eprintln!(
            "warning: {} is {w}x{h}, {what} the model's {size}x{size} input; it is resized \
             anyway and its prediction may mean little (further such images are not reported)",
            path.display()
        );
    }
}

/// Resize + centre crop to a `size` x `size` RGB image (still 8-bit, as PIL hands it on).
pub fn resize_and_crop(img: &RgbImage, size: u32) -> RgbImage {
    center_crop(&resize_shortest_edge(img, size), size)
}

/// File → (3, size, size) image in [0, 1], resized and centre-cropped: before any trigger.
pub fn load_unit(path: &Path, size: u32, device: &Device) -> Result<Tensor> {
    let img = load_rgb(path)?;
    warn_if_far_from_size(path, img.dimensions(), size);
    to_unit_tensor(&resize_and_crop(&img, size), device)
}

/// File → normalised (3, size, size) pixels.
pub fn preprocess_file(path: &Path, size: u32, device: &Device) -> Result<Tensor> {
    normalize(&load_unit(path, size, device)?)
}

/// torchvision's `RandomResizedCrop(size, scale=(min_scale, 1), ratio=(3/4, 4/3))` with bicubic
/// resampling: a random area share and aspect ratio (10 tries, then a centre crop with the ratio
/// clamped), resized to `size` x `size` as torchvision does on a PIL image (crop, then Pillow's
/// bicubic resize, bit for bit). CoOp uses `min_scale` 0.08 ([`COOP_CROP_SCALE`]).
pub fn random_resized_crop(
    img: &RgbImage,
    size: u32,
    min_scale: f64,
    rng: &mut impl rand::Rng,
) -> RgbImage {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let area = w * h;
    let (log_lo, log_hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    let mut crop = None;
    for _ in 0..10 {
        let target = area * rng.random_range(min_scale..=1.0);
        let aspect = rng.random_range(log_lo..=log_hi).exp();
        let cw = (target * aspect).sqrt().round();
        let ch = (target / aspect).sqrt().round();
        if cw > 0.0 && ch > 0.0 && cw <= w && ch <= h {
            let top = rng.random_range(0..=(h - ch) as u32);
            let left = rng.random_range(0..=(w - cw) as u32);
            crop = Some((left, top, cw as u32, ch as u32));
            break;
        }
    }
    let (left, top, cw, ch) = crop.unwrap_or_else(|| {
        let ratio = w / h;
        let (cw, ch) = if ratio < 3.0 / 4.0 {
            (w, (w / (3.0 / 4.0)).round())
        } else if ratio > 4.0 / 3.0 {
            ((h * 4.0 / 3.0).round(), h)
        } else {
            (w, h)
        };
        (
            ((w - cw) / 2.0) as u32,
            ((h - ch) / 2.0) as u32,
            cw as u32,
            ch as u32,
        )
    });
    let region = image::imageops::crop_imm(img, left, top, cw, ch).to_image();
    pil::resize_bicubic(&region, size, size)
}

/// The smallest area share of CoOp's random resized crop (torchvision's default).
pub const COOP_CROP_SCALE: f64 = 0.08;

/// Whether `min_scale` can be the smallest area share of [`random_resized_crop`]: in (0, 1].
pub fn is_crop_scale(min_scale: f64) -> bool {
    min_scale > 0.0 && min_scale <= 1.0
}

/// CoOp's training augmentation: random resized crop (area share `min_scale` to 1), then a
/// horizontal flip with p = 0.5.
pub fn augment_coop(
    img: &RgbImage,
    size: u32,
    min_scale: f64,
    rng: &mut impl rand::Rng,
) -> RgbImage {
    let crop = random_resized_crop(img, size, min_scale, rng);
    if rng.random_bool(0.5) {
        image::imageops::flip_horizontal(&crop)
    } else {
        crop
    }
}
