//! Pillow's bicubic resize, bit for bit (`Image.resize(size, BICUBIC)` on an 8-bit RGB image,
//! `libImaging/Resample.c`): the a = -0.5 cubic with its support widened by the scale when
//! shrinking, weights normalised per output pixel and rounded to 22-bit fixed point, a
//! horizontal pass rounded to 8 bits, then a vertical one. CLIP's preprocessing (OpenAI's
//! `clip.load` transform and transformers' CLIPImageProcessor) resizes with it.

use image::{Rgb, RgbImage};

/// Fixed-point precision of the weights (`32 - 8 - 2` in Pillow).
const PRECISION_BITS: u32 = 22;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output index: the first input index and the fixed-point weights of the inputs it reads.
struct Coefficients {
    first: Vec<usize>,
    weights: Vec<Vec<i64>>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for `in_size` → `out_size` (no box).
fn coefficients(in_size: usize, out_size: usize) -> Coefficients {
    const SUPPORT: f64 = 2.0;
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let mut first = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) truncates towards zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let k: Vec<f64> = (xmin..xmax)
            .map(|x| bicubic((x as f64 - center + 0.5) * ss))
            .collect();
        let ww: f64 = k.iter().sum();
        let fixed = k
            .iter()
            .map(|&w| {
                let w = if ww != 0.0 { w / ww } else { w };
                let scaled = w * (1u64 << PRECISION_BITS) as f64;
                (if w < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i64
            })
            .collect();
        first.push(xmin);
        weights.push(fixed);
    }
    Coefficients { first, weights }
}

fn clip8(ss: i64) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One pass along rows (`horizontal`) or columns, rounding every result to 8 bits.
fn pass(img: &RgbImage, c: &Coefficients, horizontal: bool) -> RgbImage {
    let (w, h) = img.dimensions();
    let out_len = c.first.len() as u32;
    let (ow, oh) = if horizontal {
        (out_len, h)
    } else {
        (w, out_len)
    };
    let mut out = RgbImage::new(ow, oh);
    for y in 0..oh {
        for x in 0..ow {
            let (o, fixed) = if horizontal { (x, y) } else { (y, x) };
            let (start, k) = (c.first[o as usize], &c.weights[o as usize]);
            let mut ss = [1i64 << (PRECISION_BITS - 1); 3];
            for (i, &wt) in k.iter().enumerate() {
                let src = (start + i) as u32;
                let px = if horizontal {
                    img.get_pixel(src, fixed)
                } else {
                    img.get_pixel(fixed, src)
                };
                for (acc, &v) in ss.iter_mut().zip(&px.0) {
                    *acc += v as i64 * wt;
                }
            }
            out.put_pixel(x, y, Rgb(ss.map(clip8)));
        }
    }
    out
}

/// `img` resized to `width` x `height` exactly as Pillow's bicubic `Image.resize` does.
pub fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = img.clone();
    // Pillow resizes horizontally first, then vertically, each only when the size changes.
    if width != w {
        out = pass(&out, &coefficients(w as usize, width as usize), true);
    }
    if height != h {
        out = pass(&out, &coefficients(h as usize, height as usize), false);
    }
    out
}
