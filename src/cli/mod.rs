//! Command-line interface: one subcommand per file.

mod anatomy;
mod attack;
mod classify;
mod data_args;
mod defend;
mod eval;
mod info;
mod patch;
mod pr;
mod toy;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "rvpt",
    version,
    about = "Repulsive Visual Prompt Tuning for backdoored CLIP models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every model-loading command takes.
#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// weights.toml entry, hub repo id (org/name[@rev]), local directory or checkpoint file
    #[arg(long, default_value = "openai/clip-vit-base-patch32")]
    pub weights: String,
    /// cpu, cuda[:N] or metal[:N]
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// RVPT prompt checkpoint to apply (from `rvpt defend`)
    #[arg(long)]
    pub prompts: Option<std::path::PathBuf>,
}

impl ModelArgs {
    pub fn load(&self) -> rvpt::Result<rvpt::engine::Engine> {
        let device = rvpt::device::parse_device(&self.device)?;
        let dtype = rvpt::device::parse_dtype(&self.dtype)?;
        rvpt::engine::Engine::load(&self.weights, &device, dtype)
    }

    /// The prompts of `--prompts`, checked against the loaded weights.
    pub fn load_prompts(
        &self,
        engine: &rvpt::engine::Engine,
    ) -> rvpt::Result<Option<rvpt::train::rvpt::DeepPrompts>> {
        self.prompts
            .as_deref()
            .map(|p| engine.load_prompts(p))
            .transpose()
    }
}

#[derive(Subcommand)]
enum Command {
    /// Zero-shot classification of images with "a photo of a {label}."
    Classify(classify::Args),
    /// Config, parameter counts, files and checksums of some weights
    Info(info::Args),
    /// Clean accuracy and attack success rate on an image folder
    Eval(eval::Args),
    /// Perturbation resistivity per perturbation
    Pr(pr::Args),
    /// Plant a backdoor: poisoned contrastive fine-tuning (or `attack optimise-patch`)
    Attack(attack::Args),
    /// Where a backdoor lives: each head's and MLP's share of the trigger's push to the target
    Anatomy(anatomy::Args),
    /// Write a split of the toy world as an image folder
    Toy(toy::Args),
    /// Repair backdoored CLIPs with RVPT (vs VPT and no defence); the embedded demo by default
    Defend(rvpt::defend::DefendArgs),
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Classify(a) => classify::run(a),
        Command::Info(a) => info::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Pr(a) => pr::run(a),
        Command::Attack(a) => attack::run(a),
        Command::Anatomy(a) => anatomy::run(a),
        Command::Toy(a) => toy::run(a),
        Command::Defend(a) => defend::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(value: &serde_json::Value) -> rvpt::Result<()> {
    rvpt::report::print_json(value)
}
