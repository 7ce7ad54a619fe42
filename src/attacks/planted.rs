//! The trigger a model was planted with, so that evaluation uses that one. `rvpt attack` writes
//! it as `trigger.json` next to the poisoned model; a `weights.toml` entry can declare it
//! (`trigger`, `trigger_seed`). A fixed pattern or warp field drawn from a seed is a different
//! trigger under another seed or other options: evaluating it would measure the wrong trigger and
//! say nothing, so it is refused.

use super::Trigger;
use crate::error::{Error, Result};
use std::path::Path;

/// File name next to a poisoned model.
pub const FILE: &str = "trigger.json";

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlantedTrigger {
    /// The canonical trigger spec (`Trigger::name`).
    pub trigger: String,
    /// The seed its fixed pattern, warp field or per-image draws came from.
    pub seed: u64,
    #[serde(default)]
    pub target: Option<String>,
}

impl PlantedTrigger {
    /// Writes `dir/trigger.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Invalid(format!("cannot serialise the trigger: {e}")))?;
        crate::fsio::write_atomic(&dir.join(FILE), json.as_bytes())
    }

    /// `dir/trigger.json`, if there is one.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::Invalid(format!(
                "{}: not a planted-trigger file: {e}",
                path.display()
            ))
        })
    }

    /// Refuses a fixed pattern drawn from a seed (`Trigger::is_seeded`) of the planted
    /// trigger's kind (badnet, blended, wanet) that is not the planted one: other options or
    /// another seed. Another kind, or a per-image random variant, is allowed: measuring a model
    /// under a trigger it was not planted with is a fair question, and asks for no pretence.
    pub fn check(&self, trigger: &Trigger, seed: u64) -> Result<()> {
        let kind = |spec: &str| spec.split(':').next().unwrap_or("").to_string();
        let asked = trigger.name();
        if !trigger.is_seeded() || kind(&asked) != kind(&self.trigger) {
            return Ok(());
        }
        if asked != self.trigger || seed != self.seed {
            return Err(Error::setting(
                crate::Setting::Trigger,
                format!("`{asked}` (trigger seed {seed})"),
                format!(
                    "the model was planted with trigger `{}` (seed {}): evaluate that trigger \
                     with that trigger seed, or another kind of trigger",
                    self.trigger, self.seed
                ),
            ));
        }
        Ok(())
    }
}
