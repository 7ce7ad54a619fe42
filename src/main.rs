//! The `rvpt` binary.

mod cli;

// Large short-lived activations: mimalloc reuses them instead of faulting fresh pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::run()
}
