//! Atomic file writes, for every file the library writes whole (checkpoints, reports, plots,
//! configs, grids): the bytes go to a temporary sibling, which is synced to disk and only then
//! renamed over the destination. A crash or an error therefore never leaves half a file where a
//! complete one is expected, never clobbers the file already there, and, on an error, never leaves
//! the temporary file behind.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// A temporary name next to `path` (same directory, so the rename stays on one file system),
/// unique to this process: two writers never share one.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes `path` atomically through `write`, which creates the file at the temporary path it is
/// given (for writers that open their own file: safetensors, PNG, zip). The temporary file is
/// synced and renamed over `path`; on any error, of `write` or after it, it is removed and `path`
/// is left as it was.
pub fn write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let written = write(&tmp)
        .and_then(|()| sync(&tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if written.is_err() {
        // The temporary may not exist (the writer failed before creating it): nothing to report.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes `bytes` to `path` atomically (see [`write_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e))
    })
}

/// Flushes a written file to disk (opened for writing: some platforms refuse to sync a read-only
/// handle).
fn sync(path: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        std::fs::write(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["out.json"]);
    }

    #[test]
    fn a_writer_failing_midway_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, b"complete").unwrap();
        let err = write_with(&path, |tmp| {
            let mut f = std::fs::File::create(tmp).unwrap();
            f.write_all(b"half a fi").unwrap();
            Err(Error::Invalid("disk full".into()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"complete");
        assert_eq!(names(dir.path()), ["model.safetensors"]);
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary() {
        // The destination is a non-empty directory: the bytes are written, the rename fails.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("kept"), b"x").unwrap();
        assert!(write_atomic(&path, b"{}").is_err());
        assert_eq!(names(dir.path()), ["report.json"]);
        assert_eq!(names(&path), ["kept"]);
    }

    #[test]
    fn a_parent_that_is_a_file_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let parent = dir.path().join("not-a-dir");
        std::fs::write(&parent, b"file").unwrap();
        let err = write_atomic(&parent.join("out.json"), b"{}").unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert_eq!(std::fs::read(&parent).unwrap(), b"file");
        assert_eq!(names(dir.path()), ["not-a-dir"]);
    }
}
