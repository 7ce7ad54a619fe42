//! The `rvpt` binary.

// Large short-lived activations: mimalloc reuses them instead of faulting fresh pages.
#[global_allocator]
static GLOBAL: rvpt::alloc::MiMalloc = rvpt::alloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rvpt::alloc::keep_freed_memory();
    rvpt::cli::run()
}
