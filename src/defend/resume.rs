//! A `--out` folder is one run's: a lock keeps a second run out, and a run started again on it
//! keeps what the first one finished when the settings are the same (and refuses, naming the
//! difference, when they are not; `--restart` starts over).

use super::case::CaseResult;
use super::output::DefendReport;
use crate::error::{Error, Result};
use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::Path;

/// Held for the whole run: an exclusive lock on `<out>/.rvpt.lock`, which records the pid. The
/// operating system drops the lock when the process ends, however it ends (`kill -9` too), so a
/// stale lock file never blocks a later run.
pub struct OutLock {
    _file: File,
}

impl OutLock {
    /// Creates `out` if needed and takes its lock; refuses when another run holds it.
    pub fn acquire(out: &Path) -> Result<Self> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let path = out.join(".rvpt.lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(Error::Invalid(format!(
                    "--out {} is in use by another rvpt run (pid {}): wait for it, or give \
                     another --out",
                    out.display(),
                    holder.trim()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        file.set_len(0).map_err(|e| Error::io(&path, e))?;
        write!(file, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
        Ok(Self { _file: file })
    }
}

/// What an earlier run into the same `--out` finished, if its settings are the ones asked for.
/// `settings`: the current run's settings as JSON. Refuses (naming every difference) when the
/// earlier run used other settings; `restart` ignores it.
pub fn previous_results(
    out: &Path,
    settings: &serde_json::Value,
    restart: bool,
) -> Result<Vec<CaseResult>> {
    let path = out.join("report.json");
    if restart || !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let report: DefendReport = serde_json::from_str(&text).map_err(|e| {
        Error::Invalid(format!(
            "{} is not a report this version of rvpt can resume from ({e}): give another --out, \
             or --restart to start over",
            path.display()
        ))
    })?;
    let diff = crate::report::json_differences(&report.settings, settings);
    if !diff.is_empty() {
        return Err(Error::Invalid(format!(
            "{} holds a run with other settings; resuming would mix them. Differences (then → \
             now):\n  {}\nGive another --out, the same settings, or --restart to start over",
            path.display(),
            diff.join("\n  ")
        )));
    }
    Ok(report.cases)
}
