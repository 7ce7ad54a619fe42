//! Weights compiled into the binary: the files of the `weights.toml` entries marked
//! `embed = true` (the default cases of `rvpt defend` and the README tour's models), so that an
//! installed or copied binary runs them with no source tree. build.rs writes the table from
//! `weights.toml`; the bytes live in the executable's read-only data, and are checked against
//! the entry's sha256 like files on disk.

/// One file of an embedded model.
#[derive(Debug)]
pub struct EmbeddedFile {
    /// Its name in the entry (`model.safetensors`, `config.json`, `tokenizer.json`).
    pub name: &'static str,
    /// How reports and errors name it: `embedded:NAME/FILE`.
    pub label: &'static str,
    pub bytes: &'static [u8],
}

/// The embedded files of one `weights.toml` entry.
#[derive(Debug)]
pub struct EmbeddedModel {
    /// The entry's name.
    pub name: &'static str,
    pub files: &'static [EmbeddedFile],
}

impl EmbeddedModel {
    pub fn file(&self, name: &str) -> Option<&'static EmbeddedFile> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// Every embedded model, in `weights.toml` order.
pub static MODELS: &[EmbeddedModel] = include!(concat!(env!("OUT_DIR"), "/embedded_weights.rs"));

/// The embedded model of the entry `name`, if it is embedded.
pub fn model(name: &str) -> Option<&'static EmbeddedModel> {
    MODELS.iter().find(|m| m.name == name)
}

/// The names of the embedded models, for errors that say what is there.
pub fn names() -> Vec<&'static str> {
    MODELS.iter().map(|m| m.name).collect()
}
