//! The one place that says, for every flag of the commands that train (`defend`, `attack`),
//! whether it can change a result (and which setting of the library it is) or not. A result
//! flag's value is in the key that decides whether an earlier result may be reused (`defend`)
//! and in the record written with the model (`attack`); `tests/plan_guard.rs` fails on a flag
//! that is not listed here. Errors are rendered with flag names from the same table.

use crate::error::{Error, Setting};

/// What a flag does to a run's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It can change a number: it is the library's `Setting`, and in the key.
    Result(Setting),
    /// It changes where or how a run reports, never a number.
    Neutral,
}

use Role::{Neutral, Result as R};

/// `rvpt defend`'s flags (long names), each classified.
pub const DEFEND_FLAGS: &[(&str, Role)] = &[
    ("weights", R(Setting::Weights)),
    ("data", R(Setting::TrainData)),
    ("test-data", R(Setting::TestData)),
    ("classnames", R(Setting::Classnames)),
    ("trigger", R(Setting::Trigger)),
    ("target", R(Setting::Target)),
    ("without-target-class", R(Setting::WithoutTargetClass)),
    ("template", R(Setting::Templates)),
    ("asr-templates", R(Setting::AsrTemplates)),
    ("epochs", R(Setting::Epochs)),
    ("shots", R(Setting::Shots)),
    ("batch-size", R(Setting::BatchSize)),
    ("lr", R(Setting::Lr)),
    ("methods", R(Setting::Methods)),
    ("lambda", R(Setting::Lambda)),
    ("cleanclip-lr", R(Setting::CleanclipLr)),
    ("cleanclip-epochs", R(Setting::CleanclipEpochs)),
    ("cleanclip-pairs", R(Setting::CleanclipPairs)),
    ("probe-epochs", R(Setting::ProbeEpochs)),
    ("cases", R(Setting::Cases)),
    ("prompt-length", R(Setting::PromptLength)),
    ("prompt-blocks", R(Setting::PromptBlocks)),
    ("augment", R(Setting::Augment)),
    ("crop-scale", R(Setting::CropScale)),
    ("fr", R(Setting::Repulsion)),
    ("repel-blocks", R(Setting::RepelBlocks)),
    ("layerwise-fr", R(Setting::RepelBlocks)),
    ("margin", R(Setting::Margin)),
    ("seed", R(Setting::Seed)),
    ("sampler", R(Setting::Sampler)),
    ("perturb", R(Setting::Perturbations)),
    ("trigger-seed", R(Setting::TriggerSeed)),
    ("anatomy", R(Setting::Anatomy)),
    ("device", R(Setting::Device)),
    ("dtype", R(Setting::Dtype)),
    ("out", Neutral),
    ("restart", Neutral),
    ("json", Neutral),
];

/// `rvpt attack`'s flags (poisoning; `attack optimise-patch` has its own), each classified.
pub const ATTACK_FLAGS: &[(&str, Role)] = &[
    ("weights", R(Setting::Weights)),
    ("device", R(Setting::Device)),
    ("dtype", R(Setting::Dtype)),
    ("pairs", R(Setting::Pairs)),
    ("trigger", R(Setting::Trigger)),
    ("target", R(Setting::Target)),
    ("poison-rate", R(Setting::PoisonRate)),
    ("epochs", R(Setting::Epochs)),
    ("batch-size", R(Setting::BatchSize)),
    ("lr", R(Setting::Lr)),
    ("weight-decay", R(Setting::WeightDecay)),
    ("warmup", R(Setting::Warmup)),
    ("seed", R(Setting::Seed)),
    ("trigger-seed", R(Setting::TriggerSeed)),
    ("poison-captions", R(Setting::PoisonCaptions)),
    ("poison-caption", R(Setting::PoisonCaption)),
    ("pgd-eps", R(Setting::Pgd)),
    ("pgd-steps", R(Setting::Pgd)),
    ("pgd-step-size", R(Setting::Pgd)),
    ("cross-ratio", R(Setting::CrossRatio)),
    ("poison-source", R(Setting::PoisonSource)),
    ("out", Neutral),
    ("json", Neutral),
];

/// The flag that gives `setting` (`--name`), from the tables above.
pub fn flag(setting: Setting) -> String {
    DEFEND_FLAGS
        .iter()
        .chain(ATTACK_FLAGS)
        .find(|(_, role)| *role == R(setting))
        .map_or_else(|| setting.to_string(), |(name, _)| format!("--{name}"))
}

/// An error as the command line says it: settings by their flags, and how to get past an
/// output folder that holds another run.
pub fn describe(e: &Error) -> String {
    match e {
        Error::Setting {
            setting,
            value,
            reason,
        } => format!("{} {value}: {reason}", flag(*setting)),
        Error::SettingNeeds { setting, needs } => {
            format!("{} needs {}", flag(*setting), flag(*needs))
        }
        Error::OutConflict {
            out,
            reason,
            differences,
        } => {
            let mut s = format!("{}: {reason}", out.display());
            if !differences.is_empty() {
                s += &format!(
                    ". Differences (then → now):\n  {}\n",
                    differences.join("\n  ")
                );
            } else {
                s += ". ";
            }
            s + "Give another --out, the same settings, or --restart to start over"
        }
        other => other.to_string(),
    }
}
