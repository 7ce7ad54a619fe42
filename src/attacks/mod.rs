//! Backdoor triggers and the perturbations of the Perturbation Resistivity (PR) metric.
//!
//! Every transform acts on RGB in [0, 1] *before* CLIP normalisation: a (3, H, W) image or a
//! (B, 3, H, W) batch, f32 (other float dtypes are computed in f32 and cast back). Nothing assumes
//! 224 px: sizes that scale with the image (patch side, WaNet grid) are parameters.
//!
//! Each transform is split in two so that it is reproducible and testable against PyTorch:
//! - *drawing* its random parameters from a ChaCha8 stream keyed by (seed, image index, transform),
//!   see [`rng`]; in a batch, image `b` uses index `index + b`;
//! - a pure *apply* function of the image and those parameters (the golden tests' subject).
//!
//! Specs (`Trigger::parse`, `Perturbation::parse`) are `name[:options]`:
//! `badnet`, `badnet:fixed`, `badnet:size=8`, `blended`, `blended:fixed`, `blended:FILE`, `wanet`,
//! `wanet:k=4,s=0.5`, `wanet:grid=FILE.pt` (a CleanCLIP or BackdoorBench grid), `lc`, `lc:amp=0.25,cell=2`; perturbations add `noise:STD`, `blur:K`,
//! `brightness:B`, `hue:H` and `flip`.

pub mod badnet;
pub mod blended;
pub mod label_consistent;
pub mod optimise;
pub mod patch;
pub mod perturb;
pub mod planted;
pub mod wanet;
pub mod wanet_file;
pub mod wanet_grid;

pub use badnet::BadNet;
pub use blended::Blended;
pub use label_consistent::LabelConsistent;
pub use patch::{apply_patch, Placement};
pub use perturb::Perturbation;
pub use wanet::WaNet;
pub use wanet_file::{read_noise_grid, write_noise_grid, GridFormat};
pub use wanet_grid::NoiseGrid;

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::str::FromStr;

/// A backdoor trigger, as parsed from a spec string.
#[derive(Debug, Clone)]
pub enum Trigger {
    BadNet(BadNet),
    Blended(Blended),
    WaNet(WaNet),
    LabelConsistent(LabelConsistent),
    /// A BadCLIP-style optimised patch (from `rvpt attack optimise-patch`), pasted at the centre.
    Patch(patch::PatchFile),
}

/// The names `Trigger::parse` knows: a perturbation spec with one of them is the trigger itself.
pub const TRIGGER_NAMES: [&str; 6] = [
    "badnet",
    "blended",
    "wanet",
    "patch",
    "lc",
    "label-consistent",
];

impl Trigger {
    /// Parses `badnet[:fixed][,size=N]`, `blended[:FILE]`, `wanet[:k=N][,s=X]`,
    /// `wanet:grid=FILE.pt[,s=X][,rescale=X]`,
    /// `lc[:amp=X][,cell=N]` (alias `label-consistent`). A blended pattern file is decoded here,
    /// so a missing or broken file fails at parse time.
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        let (name, rest) = split_spec(spec);
        match name {
            "badnet" => Ok(Trigger::BadNet(BadNet::parse_options(spec, rest)?)),
            "blended" => Ok(Trigger::Blended(match rest {
                None => Blended::noise(),
                Some("fixed") => Blended {
                    pattern: blended::BlendPattern::FixedNoise,
                    ..Blended::noise()
                },
                Some("") => {
                    return Err(bad_spec(
                        spec,
                        "expected a pattern file or `fixed` after `:`",
                    ))
                }
                Some(file) => Blended::from_file(std::path::Path::new(file))?,
            })),
            "wanet" => Ok(Trigger::WaNet(WaNet::parse_options(spec, rest)?)),
            "patch" => match rest {
                Some(rest) if !rest.is_empty() => {
                    Ok(Trigger::Patch(patch::PatchFile::parse(spec, rest)?))
                }
                _ => Err(bad_spec(
                    spec,
                    "expected a patch file: patch:FILE (.safetensors or a square image)[,pos=centre|br|random]",
                )),
            },
            "lc" | "label-consistent" => Ok(Trigger::LabelConsistent(
                LabelConsistent::parse_options(spec, rest)?,
            )),
            _ => Err(bad_spec(
                spec,
                "unknown trigger: expected badnet, blended, wanet, lc or patch:FILE",
            )),
        }
    }

    /// Applies the trigger to a (3, H, W) image or a (B, 3, H, W) batch (image `b` gets index
    /// `index + b`). WaNet ignores the index: its warp field is one per attack (per seed).
    pub fn apply(&self, image: &Tensor, seed: u64, index: u64) -> Result<Tensor> {
        match self {
            Trigger::BadNet(t) => t.apply(image, seed, index),
            Trigger::Blended(t) => t.apply(image, seed, index),
            Trigger::WaNet(t) => t.apply(image, seed),
            Trigger::LabelConsistent(t) => t.apply(image),
            Trigger::Patch(p) => p.apply(image, seed, index),
        }
    }

    /// The canonical spec (defaults omitted); `Trigger::parse(&t.name())` gives `t` back.
    /// Whether the trigger is one pattern drawn from its seed (a fixed pattern, a warp field):
    /// under another seed it is another trigger. (Per-image noise is a fresh draw anyway.)
    pub fn is_seeded(&self) -> bool {
        match self {
            Trigger::BadNet(b) => b.fixed,
            Trigger::WaNet(w) => w.file.is_none(),
            Trigger::Blended(b) => matches!(b.pattern, blended::BlendPattern::FixedNoise),
            Trigger::LabelConsistent(_) | Trigger::Patch(_) => false,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Trigger::BadNet(t) => t.name(),
            Trigger::Blended(t) => t.name(),
            Trigger::WaNet(t) => t.name(),
            Trigger::LabelConsistent(t) => t.name(),
            Trigger::Patch(p) => p.name(),
        }
    }
}

impl FromStr for Trigger {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Trigger::parse(s)
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The random stream of one transform (`stream`, e.g. "badnet") for one image. Keying on the
/// transform keeps, say, the noise and the BadNet location of the same image independent, and
/// keying on the index makes image i's draw independent of how the data set is batched.
pub fn rng(seed: u64, index: u64, stream: &str) -> ChaCha8Rng {
    // FNV-1a: a fixed, dependency-free hash, so streams never change between builds.
    let mut tag: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream.as_bytes() {
        tag ^= *b as u64;
        tag = tag.wrapping_mul(0x0100_0000_01b3);
    }
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&index.to_le_bytes());
    key[16..24].copy_from_slice(&tag.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

// ---------------------------------------------------------------- shared helpers

/// `name[:rest]`.
pub(crate) fn split_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once(':') {
        Some((name, rest)) => (name.trim(), Some(rest.trim())),
        None => (spec.trim(), None),
    }
}

pub(crate) fn bad_spec(spec: &str, reason: impl fmt::Display) -> Error {
    Error::Invalid(format!("attack spec `{spec}`: {reason}"))
}

/// Comma-separated `key=value` or flag options.
pub(crate) fn options<'a>(
    spec: &str,
    rest: Option<&'a str>,
) -> Result<Vec<(&'a str, Option<&'a str>)>> {
    let Some(rest) = rest else {
        return Ok(Vec::new());
    };
    rest.split(',')
        .map(|opt| {
            let opt = opt.trim();
            if opt.is_empty() {
                return Err(bad_spec(spec, "empty option"));
            }
            Ok(match opt.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (opt, None),
            })
        })
        .collect()
}

pub(crate) fn parse_num<T: FromStr>(spec: &str, key: &str, value: Option<&str>) -> Result<T> {
    let value = value.ok_or_else(|| bad_spec(spec, format!("`{key}` needs a value")))?;
    value
        .parse()
        .map_err(|_| bad_spec(spec, format!("`{key}={value}` is not a valid number")))
}

/// Shape of an image or batch argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dims {
    /// `None` for a single (3, H, W) image.
    pub batch: Option<usize>,
    pub h: usize,
    pub w: usize,
}

impl Dims {
    pub fn of(image: &Tensor, what: &str) -> Result<Self> {
        let (batch, c, h, w) = match *image.dims() {
            [c, h, w] => (None, c, h, w),
            [b, c, h, w] => (Some(b), c, h, w),
            _ => {
                return Err(Error::Invalid(format!(
                    "{what}: expected an RGB image (3, H, W) or batch (B, 3, H, W), got shape {:?}",
                    image.dims()
                )))
            }
        };
        if c != 3 || h == 0 || w == 0 {
            return Err(Error::Invalid(format!(
                "{what}: expected an RGB image (3, H, W) or batch (B, 3, H, W), got shape {:?}",
                image.dims()
            )));
        }
        if !image.dtype().is_float() {
            return Err(Error::Invalid(format!(
                "{what}: expected a float image in [0, 1], got {:?}",
                image.dtype()
            )));
        }
        Ok(Dims { batch, h, w })
    }

    pub fn images(&self) -> usize {
        self.batch.unwrap_or(1)
    }

    pub fn plane(&self) -> usize {
        self.h * self.w
    }
}

/// The elements as f32 on the CPU, in (…, 3, H, W) row-major order.
pub(crate) fn to_f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// f32 data back into a tensor shaped, placed and typed like `like`.
pub(crate) fn like(data: Vec<f32>, like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::from_vec(data, like.dims(), &Device::Cpu)?
        .to_dtype(like.dtype())?
        .to_device(like.device())?)
}

/// Applies `f(image_b, index + b)` to each (3, H, W) image of a batch (or to the single image).
pub(crate) fn per_image(
    image: &Tensor,
    dims: Dims,
    index: u64,
    mut f: impl FnMut(&Tensor, u64) -> Result<Tensor>,
) -> Result<Tensor> {
    match dims.batch {
        None => f(image, index),
        Some(b) => {
            let out = (0..b)
                .map(|i| f(&image.get(i)?, index + i as u64))
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::stack(&out, 0)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_differ_by_seed_index_and_name() {
        let first = |s, i, n| rng(s, i, n).random::<u64>();
        assert_eq!(first(1, 2, "a"), first(1, 2, "a"));
        assert_ne!(first(1, 2, "a"), first(2, 2, "a"));
        assert_ne!(first(1, 2, "a"), first(1, 3, "a"));
        assert_ne!(first(1, 2, "a"), first(1, 2, "b"));
    }
}
