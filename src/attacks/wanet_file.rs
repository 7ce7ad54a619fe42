//! WaNet warp fields as third-party code saves them, so that a model poisoned elsewhere is
//! evaluated under its own warp.
//!
//! - CleanCLIP (`backdoor/noise_grid_k=224_s=1_inputheight=224_gridrescale=1.pt`): `torch.save`
//!   of the bare `noise_grid` tensor.
//! - BackdoorBench (`state_dict.pt` of `attack/wanet.py`, written when `frequency_save` is set):
//!   `torch.save` of a dict whose `noise_grid` key holds it (with `identity_grid`, the model…).
//!
//! Both hold the upsampled, normalised noise (1, H, H, 2), f32, as a *permuted view*
//! (`.permute(0, 2, 3, 1)` of a (1, 2, H, H) tensor): the storage is channel-first and the
//! strides say so. The reader follows the pickle's strides whatever they are; the writer saves
//! the same permuted layout, so files it writes are what those projects would write.

use super::wanet_grid::{linspace_pm1, NoiseGrid};
use crate::error::{Error, Result};
use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{DType, Tensor};
use std::io::{Read, Write};
use std::path::Path;

/// Which project's file layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridFormat {
    /// A bare tensor.
    CleanClip,
    /// A dict with `identity_grid` and `noise_grid`.
    BackdoorBench,
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        reason: format!("not a WaNet noise grid: {reason}"),
    }
}

type Archive = zip::ZipArchive<std::io::BufReader<std::fs::File>>;

/// Reads the `noise_grid` of a CleanCLIP or BackdoorBench `.pt` file.
pub fn read_noise_grid(path: &Path) -> Result<NoiseGrid> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(path, format!("not a PyTorch zip file ({e})")))?;
    let info = pickled_grid(path, &mut zip)?;
    let dims = info.layout.dims().to_vec();
    let (h, w) = match dims[..] {
        [1, h, w, 2] | [h, w, 2] => (h, w),
        _ => {
            return Err(bad(
                path,
                format!("shape {dims:?}, expected (1, H, W, 2) or (H, W, 2)"),
            ))
        }
    };
    let storage = read_storage(path, &mut zip, &info)?;
    let noise = gather(path, &storage, &info, h, w)?;
    if noise.iter().any(|v| !v.is_finite()) {
        return Err(bad(path, "non-finite values"));
    }
    Ok(NoiseGrid { h, w, noise })
}

/// The tensor the archive's pickle saves: bare (CleanCLIP), or under `noise_grid` in a dict
/// (BackdoorBench's state dict).
fn pickled_grid(path: &Path, zip: &mut Archive) -> Result<TensorInfo> {
    let pkl = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("/data.pkl") || n == "data.pkl")
        .ok_or_else(|| bad(path, "no data.pkl inside"))?;
    // Storages live next to the pickle: `archive/data.pkl` → `archive/data/<key>`.
    let dir = pkl.strip_suffix(".pkl").unwrap_or_default().to_owned();
    let mut stack = Stack::empty();
    {
        let entry = zip.by_name(&pkl).map_err(|e| bad(path, e))?;
        stack
            .read_loop(&mut std::io::BufReader::new(entry))
            .map_err(|e| bad(path, format!("unreadable pickle ({e})")))?;
    }
    let obj = stack.finalize().map_err(|e| bad(path, e))?;
    let obj = match obj {
        Object::Dict(items) => items
            .into_iter()
            .find(|(k, _)| *k == Object::Unicode("noise_grid".into()))
            .map(|(_, v)| v)
            .ok_or_else(|| bad(path, "a dict without a `noise_grid` key"))?,
        obj => obj,
    };
    obj.into_tensor_info(Object::Unicode("noise_grid".into()), Path::new(&dir))
        .map_err(|e| bad(path, e))?
        .ok_or_else(|| bad(path, "the object saved is not a tensor"))
}

/// The whole storage behind `info`, as f32.
fn read_storage(path: &Path, zip: &mut Archive, info: &TensorInfo) -> Result<Vec<f32>> {
    let mut bytes = Vec::new();
    zip.by_name(&info.path)
        .map_err(|e| bad(path, format!("no storage `{}` ({e})", info.path)))?
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    let elem = info.dtype.size_in_bytes();
    if bytes.len() % elem != 0 {
        return Err(bad(path, "storage size is not a whole number of elements"));
    }
    Ok(Tensor::from_raw_buffer(
        &bytes,
        info.dtype,
        &[bytes.len() / elem],
        &candle_core::Device::Cpu,
    )?
    .to_dtype(DType::F32)?
    .to_vec1::<f32>()?)
}

/// The (h, w, 2) grid in logical order, gathered from `storage` through the strides of `info`
/// (the saved tensor is a permuted view).
fn gather(path: &Path, storage: &[f32], info: &TensorInfo, h: usize, w: usize) -> Result<Vec<f32>> {
    let strides = info.layout.stride();
    let start = info.layout.start_offset() / info.dtype.size_in_bytes();
    let (sy, sx, sc) = {
        let r = strides.len();
        (strides[r - 3], strides[r - 2], strides[r - 1])
    };
    let mut noise = Vec::with_capacity(h * w * 2);
    for y in 0..h {
        for x in 0..w {
            for c in 0..2 {
                let i = start + y * sy + x * sx + c * sc;
                noise.push(
                    *storage
                        .get(i)
                        .ok_or_else(|| bad(path, "the strides point outside the storage"))?,
                );
            }
        }
    }
    Ok(noise)
}

/// Pickle protocol-2 opcodes for one tensor `_rebuild_tensor_v2(storage, 0, size, stride, False,
/// OrderedDict())` whose storage is entry `key` of the archive.
fn pickle_tensor(out: &mut Vec<u8>, key: &str, numel: usize, size: &[usize], stride: &[usize]) {
    fn unicode(out: &mut Vec<u8>, s: &str) {
        out.push(b'X');
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
    }
    fn int(out: &mut Vec<u8>, v: usize) {
        out.push(b'J');
        out.extend((v as i32).to_le_bytes());
    }
    fn tuple(out: &mut Vec<u8>, v: &[usize]) {
        out.push(b'(');
        for &x in v {
            int(out, x);
        }
        out.push(b't');
    }
    out.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    out.push(b'(');
    unicode(out, "storage");
    out.extend(b"ctorch\nFloatStorage\n");
    unicode(out, key);
    unicode(out, "cpu");
    int(out, numel);
    out.extend(b"tQ"); // the storage tuple, then a persistent id
    int(out, 0);
    tuple(out, size);
    tuple(out, stride);
    out.push(0x89); // False: requires_grad
    out.extend(b"ccollections\nOrderedDict\n)Rt"); // OrderedDict(): backward hooks
    out.push(b'R');
}

/// Writes `grid` (H, W, 2 noise, as [`NoiseGrid`]) in a project's `.pt` layout, atomically.
pub fn write_noise_grid(path: &Path, grid: &NoiseGrid, format: GridFormat) -> Result<()> {
    let (h, w) = (grid.h, grid.w);
    if grid.noise.len() != h * w * 2 {
        return Err(Error::Invalid(format!(
            "a {h} x {w} noise grid needs {} values, got {}",
            h * w * 2,
            grid.noise.len()
        )));
    }
    // Channel-first storage viewed as (1, H, W, 2), as `.permute(0, 2, 3, 1)` leaves it.
    let mut noise_storage = vec![0f32; h * w * 2];
    for (i, v) in grid.noise.iter().enumerate() {
        let (pixel, c) = (i / 2, i % 2);
        noise_storage[c * h * w + pixel] = *v;
    }
    let size = [1, h, w, 2];
    let permuted = [2 * h * w, w, 1, h * w];
    let mut pkl = b"\x80\x02".to_vec();
    let mut storages: Vec<(&str, Vec<f32>)> = vec![("0", noise_storage)];
    match format {
        GridFormat::CleanClip => pickle_tensor(&mut pkl, "0", h * w * 2, &size, &permuted),
        GridFormat::BackdoorBench => {
            // torch.stack((y, x), 2)[None]: contiguous; channel 0 the column coordinate.
            let (ys, xs) = (linspace_pm1(h), linspace_pm1(w));
            let identity: Vec<f32> = (0..h * w).flat_map(|p| [xs[p % w], ys[p / w]]).collect();
            storages.push(("1", identity));
            pkl.extend(b"}(");
            for (name, key, stride) in [
                ("identity_grid", "1", [2 * h * w, 2 * w, 2, 1]),
                ("noise_grid", "0", permuted),
            ] {
                pkl.push(b'X');
                pkl.extend((name.len() as u32).to_le_bytes());
                pkl.extend(name.as_bytes());
                pickle_tensor(&mut pkl, key, h * w * 2, &size, &stride);
            }
            pkl.push(b'u');
        }
    }
    pkl.push(b'.');
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("archive")
        .to_owned();
    let write = |tmp: &Path| -> std::result::Result<(), Box<dyn std::error::Error>> {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(tmp)?);
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file(format!("{stem}/data.pkl"), stored)?;
        zip.write_all(&pkl)?;
        zip.start_file(format!("{stem}/byteorder"), stored)?;
        zip.write_all(b"little")?;
        for (key, data) in &storages {
            zip.start_file(format!("{stem}/data/{key}"), stored)?;
            for v in data {
                zip.write_all(&v.to_le_bytes())?;
            }
        }
        zip.start_file(format!("{stem}/version"), stored)?;
        zip.write_all(b"3\n")?;
        zip.finish()?;
        Ok(())
    };
    crate::fsio::write_with(path, |tmp| {
        write(tmp).map_err(|e| Error::Checkpoint {
            path: tmp.to_path_buf(),
            reason: format!("cannot write the WaNet grid: {e}"),
        })
    })
}
