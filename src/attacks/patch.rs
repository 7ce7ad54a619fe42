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

/// An optimised patch stored as safetensors (tensor `patch`, (3, p, p) in [0, 1]).
#[derive(Debug, Clone)]
pub struct PatchFile {
    pub path: std::path::PathBuf,
    pub patch: Tensor,
}

impl PatchFile {
    pub fn load(path: &std::path::Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::MissingFile(path.to_path_buf()));
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
        })
    }

    pub fn save(patch: &Tensor, path: &std::path::Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("patch".to_string(), patch.clone())]),
            &tmp,
        )?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }
}
