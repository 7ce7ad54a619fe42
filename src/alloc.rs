//! The allocator of the binaries: mimalloc, kept from handing freed memory back to the OS.
//!
//! A training step allocates and frees activations of tens of MB each. With mimalloc's default
//! purge delay, freed pages go back to the OS between uses and come back as fresh pages the
//! kernel must zero: a quarter of a prompt-tuning step's CPU time went to `clear_page` in the
//! kernel. Never purging removes that for about the same peak RSS (the step's own high-water
//! mark is reached every step anyway).

use std::ffi::{c_int, c_long};

/// mimalloc, for `#[global_allocator]`.
pub use mimalloc::MiMalloc;

// libmimalloc-sys compiles and links mimalloc's C library; its Rust bindings for options sit
// behind a feature that needs a crate not otherwise used, so the one function is declared here.
extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    fn mi_version() -> c_int;
}

/// `mi_option_purge_delay` in `mimalloc.h`, the same in mimalloc 2.x and 3.x.
const MI_OPTION_PURGE_DELAY: c_int = 15;

/// Sets mimalloc's purge delay to "never", unless `MIMALLOC_PURGE_DELAY` is set (then mimalloc
/// has read it). Call first thing in `main` of a binary whose global allocator is [`MiMalloc`];
/// harmless otherwise. Returns whether it set the option.
pub fn keep_freed_memory() -> bool {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return false;
    }
    // SAFETY: plain C calls without pointers; mimalloc reads options at any time.
    let major = unsafe { mi_version() } / 10_000;
    if !(2..=3).contains(&major) {
        return false; // another option layout: leave the defaults
    }
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    true
}
