//! Pasting a square patch into images: the BadNet trigger and the optimised (BadCLIP-style)
//! patch, whose optimisation loop lives elsewhere. Built from tensor ops only, so gradients flow
//! to both the image and the patch and it runs on any device.

use super::Dims;
use crate::error::{Error, Result};
use candle_core::Tensor;

/// Where a p x p patch goes in an H x W image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Top-left at ((H - p) / 2, (W - p) / 2), rounded down.
    Centre,
    /// Flush with the bottom-right corner (BackdoorBench's BadNet).
    BottomRight,
    /// Top-left corner at (row, col).
    At { row: usize, col: usize },
}

impl Placement {
    /// Top-left (row, col) of a `p` x `p` patch in an `h` x `w` image; errors if it does not fit.
    pub fn resolve(&self, h: usize, w: usize, p: usize) -> Result<(usize, usize)> {
        if p == 0 || p > h || p > w {
            return Err(Error::Invalid(format!(
                "a {p} x {p} patch does not fit a {h} x {w} image"
            )));
        }
        let (row, col) = match *self {
            Placement::Centre => ((h - p) / 2, (w - p) / 2),
            Placement::BottomRight => (h - p, w - p),
            Placement::At { row, col } => (row, col),
        };
        if row + p > h || col + p > w {
            return Err(Error::Invalid(format!(
                "a {p} x {p} patch at (row {row}, col {col}) leaves the {h} x {w} image"
            )));
        }
        Ok((row, col))
    }
}

/// Replaces a p x p region of a (3, H, W) image or (B, 3, H, W) batch by `patch` (3, p, p).
/// Values are pasted as given (no clamping), as CleanCLIP's BadNet does.
pub fn apply_patch(image: &Tensor, patch: &Tensor, placement: Placement) -> Result<Tensor> {
    let dims = Dims::of(image, "apply_patch image")?;
    let p = match *patch.dims() {
        [3, p, q] if p == q => p,
        _ => {
            return Err(Error::Invalid(format!(
                "apply_patch: the patch must be (3, p, p), got {:?}",
                patch.dims()
            )))
        }
    };
    let (row, col) = placement.resolve(dims.h, dims.w, p)?;
    let (h, w) = (dims.h, dims.w);
    let patch = patch.to_dtype(image.dtype())?.to_device(image.device())?;
    // Zero-padding the patch (and a mask) to H x W keeps this differentiable: out = x*(1-m) + P.
    let pad = |t: &Tensor| -> Result<Tensor> {
        Ok(t.pad_with_zeros(1, row, h - row - p)?
            .pad_with_zeros(2, col, w - col - p)?)
    };
    let full = pad(&patch)?;
    let mask = pad(&Tensor::ones((1, p, p), image.dtype(), image.device())?)?;
    let keep = mask.affine(-1.0, 1.0)?;
    Ok(image.broadcast_mul(&keep)?.broadcast_add(&full)?)
}

/// Where a patch file's patch goes: `pos=centre` (the optimised patch's default), `pos=br`
/// (flush with the bottom-right corner, BackdoorBench's BadNet), or `pos=random` (a seeded
/// position per image, CleanCLIP's `patch_location="random"`: top-left uniform in
/// [0, H-1-p] x [0, W-1-p]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchPosition {
    Centre,
    BottomRight,
    Random,
}

/// A patch from a file: an optimised patch stored as safetensors (tensor `patch`, (3, p, p) in
/// [0, 1]), or a square image (PNG, JPEG, WebP), e.g. a BadNet trigger image.
#[derive(Debug, Clone)]
pub struct PatchFile {
    pub path: std::path::PathBuf,
    pub patch: Tensor,
    pub position: PatchPosition,
}

impl PatchFile {
    /// Pastes the patch into a (3, H, W) image; `seed` and `index` draw a random position.
    pub fn apply(&self, image: &Tensor, seed: u64, index: u64) -> Result<Tensor> {
        let dims = super::Dims::of(image, "patch image")?;
        let p = self.patch.dim(1)?;
        super::per_image(image, dims, index, |img, i| {
            let at = match self.position {
                PatchPosition::Centre => Placement::Centre,
                PatchPosition::BottomRight => Placement::BottomRight,
                PatchPosition::Random => {
                    use rand::Rng;
                    if p >= dims.h || p >= dims.w {
                        return Err(Error::Invalid(format!(
                            "a {p} px patch at a random position needs an image larger than {p} px"
                        )));
                    }
                    let mut r = super::rng(seed, i, "patch-position");
                    Placement::At {
                        row: r.random_range(0..=dims.h - 1 - p),
                        col: r.random_range(0..=dims.w - 1 - p),
                    }
                }
            };
            apply_patch(img, &self.patch.to_dtype(img.dtype())?, at)
        })
    }

    /// The canonical spec: `patch:FILE` plus `,pos=…` when not centred.
    pub fn name(&self) -> String {
        let pos = match self.position {
            PatchPosition::Centre => "",
            PatchPosition::BottomRight => ",pos=br",
            PatchPosition::Random => ",pos=random",
        };
        format!("patch:{}{pos}", self.path.display())
    }

    /// `FILE[,pos=centre|br|random]`.
    pub(crate) fn parse(spec: &str, rest: &str) -> Result<Self> {
        let (file, opts) = match rest.split_once(',') {
            Some((f, o)) => (f, Some(o)),
            None => (rest, None),
        };
        let mut position = PatchPosition::Centre;
        for (key, value) in super::options(spec, opts)? {
            position = match (key, value) {
                ("pos", Some("centre" | "center")) => PatchPosition::Centre,
                ("pos", Some("br")) => PatchPosition::BottomRight,
                ("pos", Some("random")) => PatchPosition::Random,
                _ => {
                    return Err(super::bad_spec(
                        spec,
                        format!(
                            "unknown patch option `{key}`: use pos=centre, pos=br or pos=random"
                        ),
                    ))
                }
            };
        }
        let mut p = Self::load(std::path::Path::new(file))?;
        p.position = position;
        Ok(p)
    }

    /// Reads the patch, centred.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::MissingFile(path.to_path_buf()));
        }
        if crate::data::is_image_file(path) {
            let img = crate::image::load_rgb(path)?;
            if img.width() != img.height() {
                return Err(Error::Invalid(format!(
                    "{}: a patch image must be square, not {} x {}",
                    path.display(),
                    img.width(),
                    img.height()
                )));
            }
            return Ok(Self {
                path: path.to_path_buf(),
                patch: crate::image::to_unit_tensor(&img, &candle_core::Device::Cpu)?,
                position: PatchPosition::Centre,
            });
        }
        let mut t =
            candle_core::safetensors::load(path, &candle_core::Device::Cpu).map_err(|e| {
                Error::Checkpoint {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            })?;
        let patch = t.remove("patch").ok_or_else(|| Error::MissingTensor {
            name: "patch".into(),
            source_file: path.to_path_buf(),
        })?;
        match *patch.dims() {
            [3, p, q] if p == q => {}
            _ => {
                return Err(Error::TensorShape {
                    name: "patch".into(),
                    expected: vec![3, 0, 0],
                    actual: patch.dims().to_vec(),
                    source_file: path.to_path_buf(),
                })
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            patch: patch.to_dtype(candle_core::DType::F32)?,
            position: PatchPosition::Centre,
        })
    }

    pub fn save(patch: &Tensor, path: &std::path::Path) -> Result<()> {
        let tensors = std::collections::HashMap::from([("patch".to_string(), patch.clone())]);
        crate::fsio::write_with(path, |tmp| {
            Ok(candle_core::safetensors::save(&tensors, tmp)?)
        })
    }
}
