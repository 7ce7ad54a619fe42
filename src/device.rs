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
