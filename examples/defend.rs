//! The main job: repair backdoored CLIPs with RVPT and compare with VPT and no defence.
//!
//!     cargo run --release --example defend                 # the embedded toy models, offline
//!     cargo run --release --example defend -- --weights openai/clip-vit-base-patch32 \
//!         --data TRAIN_DIR --test-data TEST_DIR --trigger badnet --target banana --device cuda:0
//!
//! Same options as `rvpt defend --help`.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "RVPT against backdoored CLIPs: before/after CA, ASR and PR")]
struct Cli {
    #[command(flatten)]
    args: rvpt::cli::defend::DefendArgs,
}

fn main() -> std::process::ExitCode {
    rvpt::alloc::keep_freed_memory();
    match rvpt::cli::defend::run(Cli::parse().args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", rvpt::cli::flags::describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
