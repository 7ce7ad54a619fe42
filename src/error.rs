//! One error type for the library: every failure a user can cause has a variant that names its cause.

use std::path::PathBuf;

/// Errors raised by rvpt. Variants carry the file, tensor or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("file not found: {}", .0.display())]
    MissingFile(PathBuf),

    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("checksum mismatch for {}: expected sha256 {expected}, got {actual}", file.display())]
    ChecksumMismatch {
        file: PathBuf,
        expected: String,
        actual: String,
    },

    #[error("tensor `{name}` is missing from {}", source_file.display())]
    MissingTensor { name: String, source_file: PathBuf },

    #[error("tensor `{name}` in {} has shape {actual:?}, the model expects {expected:?}", source_file.display())]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
        source_file: PathBuf,
    },

    #[error("cannot decode image {}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },

    #[error("the label list is empty: give at least one class name")]
    EmptyLabels,

    #[error("invalid config in {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },

    #[error("invalid checkpoint {}: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },

    /// A model (or preprocessing) rvpt does not build, named by what the config or the state
    /// dict says: refused rather than loaded as something else.
    #[error("{}: {feature} is not supported: {reason}", path.display())]
    Unsupported {
        path: PathBuf,
        feature: String,
        reason: String,
    },

    #[error("cannot resolve weights `{spec}`: {reason}")]
    Resolve { spec: String, reason: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("invalid argument: {0}")]
    Invalid(String),

    /// A run setting out of range or malformed; `src/cli` names it by its flag.
    #[error("{setting} {value}: {reason}")]
    Setting {
        setting: Setting,
        value: String,
        reason: String,
    },

    /// A setting that makes sense only with another one given.
    #[error("{setting} needs {needs}")]
    SettingNeeds { setting: Setting, needs: Setting },

    /// An output folder that holds another run's work, or is in use; `differences` lists the
    /// settings that differ (then → now), when that is why.
    #[error("{}: {reason}{}; use another output folder, or restart to start over", out.display(), list_differences(differences))]
    OutConflict {
        out: PathBuf,
        reason: String,
        differences: Vec<String>,
    },

    #[error("class `{class}` has no images (jpg, jpeg, png, webp) in {}", folder.display())]
    EmptyClass { class: String, folder: PathBuf },

    #[error("unknown class `{name}`; valid classes: {}", list_names(valid))]
    UnknownClass { name: String, valid: Vec<String> },

    #[error("{}, line {line}: {reason}", path.display())]
    BadRow {
        path: PathBuf,
        line: u64,
        reason: String,
    },

    #[error("class `{class}` has {available} samples, fewer than the {wanted} asked for")]
    TooFewSamples {
        class: String,
        available: usize,
        wanted: usize,
    },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The settings of a run that trains, in the library's terms. Errors name them; `src/cli` maps
/// each to its flag (one table there also says which flags change results).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    Weights,
    TrainData,
    TestData,
    Classnames,
    Trigger,
    TriggerSeed,
    Target,
    Templates,
    AsrTemplates,
    Epochs,
    Shots,
    BatchSize,
    Lr,
    Methods,
    Lambda,
    CleanclipLr,
    CleanclipEpochs,
    CleanclipPairs,
    ProbeEpochs,
    Cases,
    PromptLength,
    PromptBlocks,
    Augment,
    CropScale,
    Repulsion,
    RepelBlocks,
    Margin,
    Seed,
    Sampler,
    Perturbations,
    Device,
    Dtype,
    Out,
    Pairs,
    PoisonRate,
    PoisonCaptions,
    PoisonCaption,
    WeightDecay,
    Warmup,
    CrossRatio,
    PoisonSource,
    Pgd,
    WithoutTargetClass,
    Anatomy,
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = format!("{self:?}");
        // CamelCase → "camel case": the library's words for it.
        let mut words = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                words.push(' ');
            }
            words.push(c.to_ascii_lowercase());
        }
        write!(f, "{words}")
    }
}

fn list_differences(d: &[String]) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(" (then → now: {})", d.join("; "))
    }
}

/// Names for an error message; a 1000-class list is cut short so the message stays readable.
fn list_names(names: &[String]) -> String {
    const SHOWN: usize = 30;
    let head = names
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>();
    if names.len() > SHOWN {
        format!("{}, … ({} in all)", head.join(", "), names.len())
    } else {
        head.join(", ")
    }
}

impl Error {
    /// A setting's value refused, and why.
    pub fn setting(
        setting: Setting,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::Setting {
            setting,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// An I/O error that names the file; a missing file gets its own variant.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile(path)
        } else {
            Error::Io { path, source }
        }
    }
}
