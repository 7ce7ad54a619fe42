//! CSV manifests: `path,label` for classification and `path,caption` for contrastive training.
//!
//! Both need a header row naming the columns (in any order, any case; other columns are
//! ignored). Fields are trimmed; quote a caption that contains commas. Relative paths are
//! resolved against the CSV file's directory, so a manifest travels with its images. Files are
//! not opened here: the loader reports unreadable ones (see [`super::OnBadImage`]).

use super::find_class;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// `(path, label)` rows; the label column holds class names or class indices.
#[derive(Debug, Clone)]
pub struct LabeledManifest {
    path: PathBuf,
    classes: Vec<String>,
    samples: Vec<(PathBuf, usize)>,
}

impl LabeledManifest {
    /// Reads a `path,label` CSV. With `classes`, a label is a class name from that list or else
    /// an index into it. Without, if every label is an integer the labels are indices and the
    /// classes are named `"0"`, …, `"max"`; otherwise every label is a name and the classes are
    /// the distinct names, sorted (as `ImageFolder` sorts folders).
    pub fn open(csv: &Path, classes: Option<&[String]>) -> Result<Self> {
        let rows = read_rows(csv, "label")?;
        let bad = |line: u64, reason: String| Error::BadRow {
            path: csv.to_path_buf(),
            line,
            reason,
        };
        let classes: Vec<String> = match classes {
            Some([]) => return Err(Error::EmptyLabels),
            Some(c) => c.to_vec(),
            None => {
                let indices: Option<Vec<usize>> =
                    rows.iter().map(|r| r.value.parse().ok()).collect();
                match indices {
                    Some(ix) => {
                        let n = ix.iter().max().map_or(0, |m| m + 1);
                        (0..n).map(|i| i.to_string()).collect()
                    }
                    None => {
                        let mut names: Vec<String> = rows.iter().map(|r| r.value.clone()).collect();
                        names.sort();
                        names.dedup();
                        names
                    }
                }
            }
        };
        let samples = rows
            .into_iter()
            .map(|r| {
                let label =
                    find_class(&classes, &r.value).or_else(|e| match r.value.parse::<usize>() {
                        Ok(i) if i < classes.len() => Ok(i),
                        _ => Err(bad(r.line, e.to_string())),
                    })?;
                Ok((r.path, label))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            path: csv.to_path_buf(),
            classes,
            samples,
        })
    }

    /// The CSV file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// `(resolved image path, label)`, in file order.
    pub fn samples(&self) -> &[(PathBuf, usize)] {
        &self.samples
    }

    pub fn labels(&self) -> Vec<usize> {
        self.samples.iter().map(|(_, l)| *l).collect()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn class_index(&self, name: &str) -> Result<usize> {
        find_class(&self.classes, name)
    }
}

/// `(path, caption)` rows for image–text training.
#[derive(Debug, Clone)]
pub struct CaptionManifest {
    path: PathBuf,
    items: Vec<(PathBuf, String)>,
}

impl CaptionManifest {
    /// Reads a `path,caption` CSV; an empty caption is a bad row.
    pub fn open(csv: &Path) -> Result<Self> {
        let items = read_rows(csv, "caption")?
            .into_iter()
            .map(|r| (r.path, r.value))
            .collect();
        Ok(Self {
            path: csv.to_path_buf(),
            items,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `(resolved image path, caption)`, in file order.
    pub fn items(&self) -> &[(PathBuf, String)] {
        &self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

struct Row {
    line: u64,
    path: PathBuf,
    value: String,
}

/// Rows of a `path,<column>` CSV with paths resolved; at least one row.
fn read_rows(csv: &Path, column: &str) -> Result<Vec<Row>> {
    let file = std::fs::File::open(csv).map_err(|e| Error::io(csv, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(file);
    let bad = |line: u64, reason: String| Error::BadRow {
        path: csv.to_path_buf(),
        line,
        reason,
    };
    let from_csv = |e: csv::Error| {
        let line = e.position().map_or(0, |p| p.line());
        let message = e.to_string();
        match e.into_kind() {
            csv::ErrorKind::Io(io) => Error::io(csv, io),
            _ => bad(line, message),
        }
    };
    let header = reader.headers().map_err(from_csv)?.clone();
    let find = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(path_col), Some(value_col)) = (find("path"), find(column)) else {
        return Err(bad(
            1,
            format!(
                "the header must name the columns `path` and `{column}`; it has: {}",
                header.iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    let base = csv.parent().unwrap_or(Path::new(""));
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(from_csv)?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: usize| record.get(i).unwrap_or("");
        let (path, value) = (field(path_col), field(value_col));
        if path.is_empty() {
            return Err(bad(line, "empty path".into()));
        }
        if value.is_empty() {
            return Err(bad(line, format!("empty {column}")));
        }
        rows.push(Row {
            line,
            path: base.join(path),
            value: value.to_string(),
        });
    }
    if rows.is_empty() {
        return Err(bad(1, "the manifest has a header but no rows".into()));
    }
    Ok(rows)
}
