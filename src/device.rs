//! Run-time choice of device (`cpu`, `cuda:N`, `metal`) and dtype (`f32`, `f16`, `bf16`).

use crate::error::{Error, Result};
use candle_core::{DType, Device};

/// Parses `cpu`, `cuda`, `cuda:N`, `metal` or `metal:N` into a device.
/// A GPU name fails with a clear error when the binary was built without that feature.
pub fn parse_device(spec: &str) -> Result<Device> {
    let (kind, ordinal) = match spec.split_once(':') {
        Some((k, n)) => {
            let n = n
                .parse::<usize>()
                .map_err(|_| Error::Invalid(format!("bad device ordinal in `{spec}`")))?;
            (k, n)
        }
        None => (spec, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" if cfg!(feature = "cuda") => Ok(Device::new_cuda(ordinal)?),
        "metal" if cfg!(feature = "metal") => Ok(Device::new_metal(ordinal)?),
        "cuda" | "metal" => Err(Error::Invalid(format!(
            "device `{spec}` needs a binary built with `--features {kind}`"
        ))),
        _ => Err(Error::Invalid(format!(
            "unknown device `{spec}` (expected cpu, cuda[:N] or metal[:N])"
        ))),
    }
}

/// Parses `f32`, `f16` or `bf16`.
pub fn parse_dtype(spec: &str) -> Result<DType> {
    match spec {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        _ => Err(Error::Invalid(format!(
            "unknown dtype `{spec}` (expected f32, f16 or bf16)"
        ))),
    }
}

/// `cpu`, `cuda:N` or `metal:N`, as `--device` spells them.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Free memory on `device` in bytes: the GPU's free memory on CUDA, the host's available memory
/// (`MemAvailable`) on the CPU, `None` where it cannot be asked (Metal, or a failed query).
pub fn free_memory(device: &Device) -> Option<u64> {
    match device {
        Device::Cpu => std::fs::read_to_string("/proc/meminfo")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024),
        #[cfg(feature = "cuda")]
        Device::Cuda(cuda) => cuda
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, _total)| free as u64),
        _ => None,
    }
}

/// Whether a cache of `bytes` should live on a device with `free` bytes free: at most half of
/// it, the other half being left to the training step's activations. Unknown free memory
/// (Metal's unified memory) counts as fitting.
pub fn cache_fits(bytes: u64, free: Option<u64>) -> bool {
    free.is_none_or(|free| bytes <= free / 2)
}
