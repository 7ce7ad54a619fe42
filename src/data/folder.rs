//! A torchvision-style `ImageFolder`: one sub-folder per class.

use super::find_class;
use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// Whether the file name has an image extension the decoder reads (jpg, jpeg, png, webp, any case).
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Images in `root/<class folder>/…`, labelled by class folder.
///
/// Order is torchvision's `ImageFolder`: class folders sorted by name (label = position), and
/// within a class the files of each directory sorted by name, directories (nested ones included)
/// visited in the sorted order of their paths. One deliberate difference: names starting with `.`
/// are ignored (`.ipynb_checkpoints`, macOS `._x.jpg` resource forks are not data).
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    folders: Vec<String>,
    classes: Vec<String>,
    samples: Vec<(PathBuf, usize)>,
}

impl ImageFolder {
    /// Scans `dir`. Class names are the folder names, or come from `classnames`: either one name
    /// per line in sorted-folder order, or `folder<TAB>name` lines (an Imagenette / ImageNet
    /// `synset\tname` tsv; entries for folders that are absent are ignored). Blank lines are
    /// skipped. A class folder with no image is an error (`EmptyClass`), as in torchvision.
    ///
    /// `path/split_zhou_X.json#train` (`#val`, `#test`) reads a split of a CoOp split file
    /// instead (see `data::coop`).
    pub fn open(dir: &Path, classnames: Option<&Path>) -> Result<Self> {
        if let Some((file, split)) = super::coop::parse_spec(dir) {
            if classnames.is_some() {
                return Err(Error::setting(
                    crate::Setting::Classnames,
                    classnames.map_or(String::new(), |c| c.display().to_string()),
                    "a CoOp split file names its classes: give no class names file",
                ));
            }
            return super::coop::open(&file, &split);
        }
        if !dir.exists() {
            return Err(Error::MissingFile(dir.to_path_buf()));
        }
        if !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "{} is not a directory of class folders",
                dir.display()
            )));
        }
        let mut folders = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let path = entry.path();
            // `is_dir` follows symlinks, as torchvision's scandir-based search does.
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().into_string().map_err(|n| {
                Error::Invalid(format!("class folder name {n:?} is not valid UTF-8"))
            })?;
            if !name.starts_with('.') {
                folders.push(name);
            }
        }
        folders.sort();
        if folders.is_empty() {
            return Err(Error::Invalid(format!(
                "{} has no class sub-folders",
                dir.display()
            )));
        }
        let classes = match classnames {
            Some(file) => read_classnames(file, &folders)?,
            // ImageNet's train/n01440764/… folders get CLIP's class names.
            None if imagenet_folders(&folders) => {
                classnames_from_text(IMAGENET_CLASSNAMES, Path::new(IMAGENET), &folders)?
            }
            None => folders.clone(),
        };
        let mut samples = Vec::new();
        for (label, folder) in folders.iter().enumerate() {
            let class_dir = dir.join(folder);
            let files = images_under(&class_dir)?;
            if files.is_empty() {
                return Err(Error::EmptyClass {
                    class: classes[label].clone(),
                    folder: class_dir,
                });
            }
            samples.extend(files.into_iter().map(|f| (f, label)));
        }
        Ok(Self {
            root: dir.to_path_buf(),
            folders,
            classes,
            samples,
        })
    }

    /// An image folder from its parts (other dataset layouts); `samples` label into `classes`.
    pub(crate) fn from_parts(
        root: PathBuf,
        folders: Vec<String>,
        classes: Vec<String>,
        samples: Vec<(PathBuf, usize)>,
    ) -> Self {
        Self {
            root,
            folders,
            classes,
            samples,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Class names, in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Class folder names, in label order.
    pub fn folders(&self) -> &[String] {
        &self.folders
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// `(image path, label)` pairs, grouped by class in label order.
    pub fn samples(&self) -> &[(PathBuf, usize)] {
        &self.samples
    }

    pub fn labels(&self) -> Vec<usize> {
        self.samples.iter().map(|(_, l)| *l).collect()
    }

    /// The label of a class name (or, failing that, of a folder name); `UnknownClass` otherwise.
    pub fn class_index(&self, name: &str) -> Result<usize> {
        find_class(&self.classes, name)
            .or_else(|e| self.folders.iter().position(|f| f == name).ok_or(e))
    }
}

/// Image files under `dir`, recursively, in torchvision's order (see [`ImageFolder`]).
fn images_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    let mut seen = HashSet::new();
    collect_dirs(dir, &mut dirs, &mut seen)?;
    // torchvision sorts os.walk's (root, dirs, files) tuples: by the directory path string.
    dirs.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    let mut out = Vec::new();
    for (d, mut files) in dirs.into_iter().map(|d| (d, Vec::new())) {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if !hidden && path.is_file() && is_image_file(&path) {
                files.push(path);
            }
        }
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        out.extend(files);
    }
    Ok(out)
}

/// `dir` and every non-hidden directory below it; symlinks are followed, each real directory
/// visited once so a link cycle cannot loop forever.
fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>, seen: &mut HashSet<PathBuf>) -> Result<()> {
    let real = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    if !seen.insert(real) {
        return Ok(());
    }
    out.push(dir.to_path_buf());
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if path.is_dir() && !entry.file_name().to_string_lossy().starts_with('.') {
            collect_dirs(&path, out, seen)?;
        }
    }
    Ok(())
}

/// Class names from a classnames file, in the order of `folders` (see [`ImageFolder::open`]).
fn read_classnames(file: &Path, folders: &[String]) -> Result<Vec<String>> {
    if file == Path::new(IMAGENET) && !file.exists() {
        return classnames_from_text(IMAGENET_CLASSNAMES, file, folders);
    }
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    classnames_from_text(&text, file, folders)
}

/// `--classnames imagenet`: the embedded ImageNet table.
pub const IMAGENET: &str = "imagenet";

/// ImageNet's 1000 synsets (folder names, in class-index order) with the class names OpenAI's
/// CLIP evaluation uses: `synset<TAB>name` lines (assets/imagenet_clip_classnames.tsv).
pub const IMAGENET_CLASSNAMES: &str = include_str!("../../assets/imagenet_clip_classnames.tsv");

/// Whether every folder is an ImageNet synset: then the CLIP names are used without being asked.
fn imagenet_folders(folders: &[String]) -> bool {
    let known: HashSet<&str> = IMAGENET_CLASSNAMES
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(s, _)| s))
        .collect();
    folders.iter().all(|f| known.contains(f.as_str()))
}

fn classnames_from_text(text: &str, file: &Path, folders: &[String]) -> Result<Vec<String>> {
    let lines: Vec<(u64, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let bad = |line: u64, reason: String| Error::BadRow {
        path: file.to_path_buf(),
        line,
        reason,
    };
    let config = |reason: String| Error::Config {
        path: file.to_path_buf(),
        reason,
    };
    let tabbed = lines.first().is_some_and(|(_, l)| l.contains('\t'));
    if tabbed {
        let mut map: HashMap<&str, &str> = HashMap::new();
        for &(n, line) in &lines {
            let Some((folder, name)) = line.split_once('\t') else {
                return Err(bad(
                    n,
                    "expected `folder<TAB>name`, as on the first line".into(),
                ));
            };
            let (folder, name) = (folder.trim(), name.trim());
            if folder.is_empty() || name.is_empty() {
                return Err(bad(n, "empty folder or class name".into()));
            }
            if map.insert(folder, name).is_some() {
                return Err(bad(n, format!("folder `{folder}` is listed twice")));
            }
        }
        folders
            .iter()
            .map(|f| {
                map.get(f.as_str())
                    .map(|n| n.to_string())
                    .ok_or_else(|| config(format!("no entry for class folder `{f}`")))
            })
            .collect()
    } else {
        if let Some(&(n, _)) = lines.iter().find(|(_, l)| l.contains('\t')) {
            return Err(bad(
                n,
                "a `folder<TAB>name` line in a file of plain names (the first line has no tab)"
                    .into(),
            ));
        }
        if lines.len() != folders.len() {
            return Err(config(format!(
                "{} class names for {} class folders",
                lines.len(),
                folders.len()
            )));
        }
        Ok(lines.iter().map(|(_, l)| l.trim().to_string()).collect())
    }
}
