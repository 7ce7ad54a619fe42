//! Where one file of some weights is stored: on disk, or embedded in the binary. Readers take
//! its bytes (borrowed from the binary, or read from disk) and name it by [`StoredFile::path`].

use super::embedded::EmbeddedFile;
use crate::error::{Error, Result};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub enum StoredFile {
    Disk(PathBuf),
    Embedded(&'static EmbeddedFile),
}

impl StoredFile {
    /// The file on disk, or the embedded file's label (`embedded:NAME/FILE`), which is not a
    /// path to open: what reports and errors print.
    pub fn path(&self) -> &Path {
        match self {
            Self::Disk(p) => p,
            Self::Embedded(f) => Path::new(f.label),
        }
    }

    /// The file on disk, None when embedded.
    pub fn disk_path(&self) -> Option<&Path> {
        match self {
            Self::Disk(p) => Some(p),
            Self::Embedded(_) => None,
        }
    }

    /// Its file name (`model.safetensors`, …): how the manifest's sha256 table keys it.
    pub fn file_name(&self) -> String {
        match self {
            Self::Disk(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            Self::Embedded(f) => f.name.to_string(),
        }
    }

    pub fn exists(&self) -> bool {
        match self {
            Self::Disk(p) => p.is_file(),
            Self::Embedded(_) => true,
        }
    }

    /// Its bytes: borrowed when embedded, read when on disk.
    pub fn bytes(&self) -> Result<Cow<'static, [u8]>> {
        match self {
            Self::Disk(p) => std::fs::read(p)
                .map(Cow::Owned)
                .map_err(|e| Error::io(p, e)),
            Self::Embedded(f) => Ok(Cow::Borrowed(f.bytes)),
        }
    }

    /// sha256 of its content (a file on disk is streamed).
    pub fn sha256(&self) -> Result<String> {
        match self {
            Self::Disk(p) => super::sha256_file(p),
            Self::Embedded(f) => Ok(super::sha256_bytes(f.bytes)),
        }
    }
}

impl std::fmt::Display for StoredFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.path().display().fmt(f)
    }
}

/// As its [`StoredFile::path`], as a `PathBuf` would serialise.
impl serde::Serialize for StoredFile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.path().serialize(s)
    }
}
