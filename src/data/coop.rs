//! CoOp's split files, as the few-shot CLIP papers keep their datasets: `split_zhou_OxfordPets.json`,
//! `split_zhou_Caltech101.json`, … hold `{"train": [[impath, label, classname], …], "val": …,
//! "test": …}`, with `impath` relative to the dataset's image folder (`images/` for OxfordPets,
//! `101_ObjectCategories/` for Caltech101). A class name's underscores become spaces, as CoOp's
//! prompts write them.

use super::ImageFolder;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Whether `spec` names a split of a CoOp file: `path/split_zhou_X.json#train` (or `#val`,
/// `#test`). Returns the file and the split.
pub fn parse_spec(spec: &Path) -> Option<(PathBuf, String)> {
    let s = spec.to_str()?;
    let (file, split) = s.rsplit_once('#')?;
    file.ends_with(".json")
        .then(|| (PathBuf::from(file), split.to_string()))
}

/// One row of a split: (impath, label, class name with spaces).
type Entry = (String, usize, String);

fn bad(file: &Path, reason: String) -> Error {
    Error::Config {
        path: file.to_path_buf(),
        reason,
    }
}

/// The images of one split, labelled as the file says. The image folder is the first of the
/// file's own folder and its sub-folders in which the split's first image exists.
pub fn open(file: &Path, split: &str) -> Result<ImageFolder> {
    let entries = read_entries(file, split)?;
    let first = entries
        .first()
        .ok_or_else(|| bad(file, format!("the `{split}` list is empty")))?;
    let root = image_root(file, split, &first.0)?;
    let classes = class_names(file, split, &entries)?;
    let mut samples: Vec<(PathBuf, usize)> = entries
        .into_iter()
        .map(|(p, l, _)| (root.join(p), l))
        .collect();
    // Grouped by class in label order, as an image folder's samples are (the k-shot sampler
    // and the loaders assume nothing else, but reports read better).
    samples.sort_by_key(|s| s.1);
    Ok(ImageFolder::from_parts(
        root,
        classes.clone(),
        classes,
        samples,
    ))
}

/// The rows of `split` in the file.
fn read_entries(file: &Path, split: &str) -> Result<Vec<Entry>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(file, format!("not JSON: {e}")))?;
    let rows = json.get(split).and_then(|v| v.as_array()).ok_or_else(|| {
        bad(
            file,
            format!("no `{split}` list (CoOp splits are train, val, test)"),
        )
    })?;
    let mut entries = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let parsed = row.as_array().and_then(|r| {
            Some((
                r.first()?.as_str()?.to_string(),
                r.get(1)?.as_u64()? as usize,
                r.get(2)?.as_str()?.replace('_', " "),
            ))
        });
        entries.push(parsed.ok_or_else(|| {
            bad(
                file,
                format!("`{split}` entry {i} is not [impath, label, classname]: {row}"),
            )
        })?);
    }
    Ok(entries)
}

/// The image folder: the first of the file's folder and its sub-folders (sorted) that holds
/// `first_image`.
fn image_root(file: &Path, split: &str, first_image: &str) -> Result<PathBuf> {
    let base = file.parent().unwrap_or(Path::new("."));
    let mut candidates = vec![base.to_path_buf()];
    if let Ok(dir) = std::fs::read_dir(base) {
        let mut subs: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subs.sort();
        candidates.extend(subs);
    }
    candidates
        .into_iter()
        .find(|c| c.join(first_image).is_file())
        .ok_or_else(|| {
            bad(
                file,
                format!(
                    "its first `{split}` image `{first_image}` is in neither {} nor a sub-folder of it",
                    base.display()
                ),
            )
        })
}

/// The class name of every label 0..=max, each named alike wherever it appears.
fn class_names(file: &Path, split: &str, entries: &[Entry]) -> Result<Vec<String>> {
    let n = entries.iter().map(|e| e.1).max().map_or(0, |m| m + 1);
    let mut classes: Vec<Option<String>> = vec![None; n];
    for (impath, label, name) in entries {
        match &classes[*label] {
            Some(known) if known != name => {
                return Err(bad(
                    file,
                    format!("label {label} is `{known}` and `{name}` (at {impath})"),
                ))
            }
            Some(_) => {}
            None => classes[*label] = Some(name.clone()),
        }
    }
    classes
        .into_iter()
        .enumerate()
        .map(|(l, c)| {
            c.ok_or_else(|| {
                bad(
                    file,
                    format!("the `{split}` split has no image of label {l}"),
                )
            })
        })
        .collect()
}
