//! An output folder is one run's: a lock keeps a second run out, and a run started again on it
//! keeps what the first one finished where a method's configuration is the same (and refuses,
//! naming the differences, where it is not: `case::defend_case`); restarting starts over.

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
                return Err(Error::OutConflict {
                    out: out.to_path_buf(),
                    reason: format!(
                        "in use by another rvpt run (pid {}): wait for it",
                        holder.trim()
                    ),
                    differences: Vec::new(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        file.set_len(0).map_err(|e| Error::io(&path, e))?;
        write!(file, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
        Ok(Self { _file: file })
    }
}

/// What an earlier run into the same output folder finished (`restart`: nothing). Whether
/// each result may be reused is decided per method, by its configuration's key.
pub fn previous_results(out: &Path, restart: bool) -> Result<Vec<CaseResult>> {
    let path = out.join("report.json");
    if restart || !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let report: DefendReport = serde_json::from_str(&text).map_err(|e| Error::OutConflict {
        out: out.to_path_buf(),
        reason: format!(
            "{} is not a report this version of rvpt can resume from ({e})",
            path.display()
        ),
        differences: Vec::new(),
    })?;
    Ok(report.cases)
}
