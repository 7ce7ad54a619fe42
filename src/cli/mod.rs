//! Command-line interface: one subcommand per file.

mod anatomy;
mod attack;
mod classify;
mod data_args;
pub mod defend;
mod eval;
pub mod flags;
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
}

impl ModelArgs {
    pub fn load(&self) -> crate::Result<crate::engine::Engine> {
        let device = crate::device::parse_device(&self.device)?;
        let dtype = crate::device::parse_dtype(&self.dtype)?;
        crate::engine::Engine::load(&self.weights, &device, dtype)
    }
}

/// `--prompts`, for the commands that run the image tower with RVPT prompts.
#[derive(clap::Args, Clone)]
pub struct PromptArgs {
    /// RVPT prompt checkpoint to apply (from `rvpt defend`)
    #[arg(long)]
    pub prompts: Option<std::path::PathBuf>,
}

impl PromptArgs {
    /// The prompts of `--prompts`, checked against the loaded weights.
    pub fn load_prompts(
        &self,
        engine: &crate::engine::Engine,
    ) -> crate::Result<Option<crate::train::rvpt::DeepPrompts>> {
        self.prompts
            .as_deref()
            .map(|p| engine.load_prompts(p))
            .transpose()
    }
}

/// `--help` of every `--trigger`.
pub const TRIGGER_HELP: &str = "Trigger spec NAME[:OPTIONS]. The embedded toy models' triggers: \
badnet:fixed,size=4 (toy-badnet, toy2-badnet, toy3-badnet), blended:fixed (toy-blended, \
toy2-blended, toy3-blended), wanet:k=4,s=8 (toy-wanet), wanet:k=4,s=16 (toy3-wanet). Others: \
badnet[:fixed][,size=N] (a random patch per image, or one fixed pattern; 16 px by default), \
blended[:fixed|FILE] (noise blended in, or an image file), wanet[:k=N][,s=X] (a warp field drawn from the seed), \
wanet:grid=FILE.pt[,s=X] (a CleanCLIP or BackdoorBench grid), \
patch:FILE[,pos=centre|br|random] (an optimised patch, from `rvpt attack optimise-patch`), \
lc[:amp=X,cell=N] (label-consistent). A seeded trigger (fixed patterns, warp fields) is another \
trigger under another seed: --trigger-seed (default 7) must be the one it was planted with";

/// `--help` of `pr --perturb`.
pub const PERTURB_HELP: &str = "Comma-separated perturbations: noise:STD (Gaussian, std in \
[0, 1] pixel units), blur:K (Gaussian blur, odd kernel K), brightness:B (factor drawn from \
[1-B, 1+B], B <= 1), hue:H (shift drawn from [-H, H] turns, H <= 0.5), flip (horizontal), or \
a trigger (see `rvpt eval --help`), e.g. noise:0.03,blur:3,flip,badnet:fixed,size=4";

/// Where a `--json` report came from (`crate::report::Provenance`), as JSON: with an engine,
/// the device, dtype and weights it ran.
pub fn provenance(engine: Option<&crate::engine::Engine>) -> serde_json::Value {
    let p = match engine {
        Some(e) => crate::report::Provenance::of_engine(e),
        None => crate::report::Provenance::now(),
    };
    serde_json::to_value(p).unwrap_or_default()
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
    Defend(defend::DefendArgs),
}

/// The whole command line (every subcommand and flag), as clap sees it.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
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
            eprintln!("error: {}", flags::describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// Prints a value as JSON on stdout: pretty on a terminal, one line otherwise.
pub fn print_json(value: &serde_json::Value) -> crate::Result<()> {
    crate::report::print_json(value)
}
