//! Device and dtype parsing, and where the prefix cache lives.

use candle_core::{DType, Device};
use rvpt::device::{cache_fits, device_name, free_memory, parse_device, parse_dtype};

#[test]
fn devices_and_dtypes_parse_or_name_the_problem() {
    assert!(parse_device("cpu").unwrap().is_cpu());
    assert_eq!(device_name(&Device::Cpu), "cpu");
    assert_eq!(parse_dtype("bf16").unwrap(), DType::BF16);
    assert_eq!(parse_dtype("f16").unwrap(), DType::F16);
    let e = parse_dtype("f8").unwrap_err().to_string();
    assert!(e.contains("f8") && e.contains("bf16"), "{e}");
    let e = parse_device("tpu").unwrap_err().to_string();
    assert!(e.contains("tpu"), "{e}");
    let e = parse_device("cuda:x").unwrap_err().to_string();
    assert!(e.contains("ordinal"), "{e}");
    if !cfg!(feature = "cuda") {
        let e = parse_device("cuda").unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}

/// The cache stays on the device when it takes at most half of the free memory.
#[test]
fn the_cache_fits_in_half_the_free_memory() {
    assert!(cache_fits(500, Some(1000)));
    assert!(!cache_fits(501, Some(1000)));
    assert!(
        cache_fits(u64::MAX, None),
        "unknown free memory counts as fitting"
    );
    // The host's available memory is read from /proc/meminfo on Linux.
    if cfg!(target_os = "linux") {
        let free = free_memory(&Device::Cpu).expect("MemAvailable");
        assert!(free > 1 << 20, "{free} bytes available");
    }
}
