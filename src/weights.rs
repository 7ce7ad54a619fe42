//! Where weights come from: the `weights.toml` manifest, local paths, and the Hugging Face hub
//! (local cache first, then download), with sha256 verification.
//!
//! `--weights` accepts a manifest name, a hub repo id (`org/name`, optionally `@revision`), a
//! local directory or a single checkpoint file. Local paths win, then the manifest, then the hub.
//!
//! A manifest entry with a `path` is read from the binary when it is embedded (`embed = true`,
//! see [`embedded`]), else from that path under the working directory, else under the source
//! tree (`RVPT_SOURCE_TREE`, see [`source_tree`]).

pub mod embedded;
mod stored;
pub use stored::StoredFile;

use crate::error::{Error, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The manifest compiled into the binary, so it works away from the source tree.
pub const EMBEDDED_MANIFEST: &str = include_str!("../weights.toml");

/// One named entry of `weights.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestEntry {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Hub repo id; exclusive with `path`.
    pub repo: Option<String>,
    pub revision: Option<String>,
    /// Directory relative to the repository root; exclusive with `repo`.
    pub path: Option<String>,
    /// Compiled into the binary by build.rs (a `path` entry only): read from there first.
    #[serde(default)]
    pub embed: bool,
    pub checkpoint: String,
    pub config: Option<String>,
    pub tokenizer: Option<String>,
    #[serde(default)]
    pub sha256: BTreeMap<String, String>,
    /// The trigger a backdoored model was planted with, and its seed (see `attacks::planted`).
    pub trigger: Option<String>,
    pub trigger_seed: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub model: Vec<ManifestEntry>,
}

impl Manifest {
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config {
            path: origin.to_path_buf(),
            reason: e.to_string(),
        })
    }

    pub fn embedded() -> Result<Self> {
        Self::parse(EMBEDDED_MANIFEST, Path::new("weights.toml (embedded)"))
    }

    pub fn get(&self, name: &str) -> Option<&ManifestEntry> {
        self.model.iter().find(|e| e.name == name)
    }
}

/// How to reach the hub cache. `from_env` follows huggingface_hub: HF_HUB_CACHE, else
/// HF_HOME/hub, else ~/.cache/huggingface/hub; HF_HUB_OFFLINE=1 forbids downloads.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub cache_dir: PathBuf,
    pub offline: bool,
}

impl HubSettings {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let cache_dir = if let Some(dir) = var("HF_HUB_CACHE") {
            PathBuf::from(dir)
        } else if let Some(home) = var("HF_HOME") {
            PathBuf::from(home).join("hub")
        } else {
            let home = var("HOME").unwrap_or_else(|| ".".into());
            PathBuf::from(home).join(".cache/huggingface/hub")
        };
        let offline = var("HF_HUB_OFFLINE")
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false);
        Self { cache_dir, offline }
    }
}

/// A file the weights consist of, with its digest and, where the manifest knows it, the expected one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WeightFile {
    pub role: &'static str,
    pub path: StoredFile,
    pub sha256: String,
    pub expected_sha256: Option<String>,
}

/// The files a `--weights` value resolved to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResolvedWeights {
    /// How it was found: "local:PATH", "manifest:NAME (DIR)", "manifest:NAME (embedded)",
    /// "hub:REPO@REV".
    pub source: String,
    pub checkpoint: StoredFile,
    pub config: Option<StoredFile>,
    pub tokenizer: Option<StoredFile>,
    pub files: Vec<WeightFile>,
    /// The trigger the model was planted with: from its `weights.toml` entry, else from a
    /// `trigger.json` next to the checkpoint.
    pub planted: Option<crate::attacks::planted::PlantedTrigger>,
}

impl ResolvedWeights {
    /// sha256 of the checkpoint file (what prompt checkpoints and reports record).
    pub fn checkpoint_sha256(&self) -> Option<&str> {
        self.files
            .iter()
            .find(|f| f.role == "checkpoint")
            .map(|f| f.sha256.as_str())
    }

    /// Refuses evaluating a model under a variant of the trigger it was planted with (see
    /// `PlantedTrigger::check`).
    pub fn check_trigger(&self, trigger: &crate::attacks::Trigger, seed: u64) -> Result<()> {
        match &self.planted {
            Some(p) => p.check(trigger, seed),
            None => Ok(()),
        }
    }
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// sha256 of bytes in memory.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Checkpoint file names tried, in order, inside a weights directory.
const CHECKPOINT_NAMES: [&str; 4] = [
    "model.safetensors",
    "open_clip_model.safetensors",
    "pytorch_model.bin",
    "open_clip_pytorch_model.bin",
];

fn find_checkpoint_in(dir: &Path) -> Result<PathBuf> {
    if let Some(p) = CHECKPOINT_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
    {
        return Ok(p);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut candidates: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "safetensors" || x == "pt" || x == "pth" || x == "bin")
        })
        .collect();
    candidates.sort();
    candidates.into_iter().next().ok_or_else(|| Error::Resolve {
        spec: dir.display().to_string(),
        reason: format!(
            "no checkpoint in this directory (looked for {} or any .safetensors/.pt/.pth/.bin)",
            CHECKPOINT_NAMES.join(", ")
        ),
    })
}

fn sibling(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = dir.join(name);
    p.is_file().then_some(p)
}

/// The config files that may describe `checkpoint`, most fitting first: open_clip's own beside
/// an `open_clip_*` checkpoint (a repo holding both layouts may also hold a `config.json` that
/// is not a CLIPConfig, e.g. timm's), transformers' otherwise.
pub fn config_names_for(checkpoint: &Path) -> [&'static str; 2] {
    let name = checkpoint
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if name.starts_with("open_clip") {
        [OPEN_CLIP_CONFIG, "config.json"]
    } else {
        ["config.json", OPEN_CLIP_CONFIG]
    }
}

/// open_clip's hub config: `model_cfg` (activation included) and `preprocess_cfg`.
pub const OPEN_CLIP_CONFIG: &str = "open_clip_config.json";

/// A local directory or file. A file's directory supplies its config (config.json or
/// open_clip_config.json, see [`config_names_for`]) and tokenizer.json if present.
fn resolve_local(path: &Path) -> Result<ResolvedWeights> {
    let (dir, checkpoint) = if path.is_dir() {
        (path.to_path_buf(), find_checkpoint_in(path)?)
    } else {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        (dir, path.to_path_buf())
    };
    let config = config_names_for(&checkpoint)
        .iter()
        .find_map(|n| sibling(&dir, n));
    Ok(ResolvedWeights {
        source: format!("local:{}", path.display()),
        checkpoint: StoredFile::Disk(checkpoint),
        config: config.map(StoredFile::Disk),
        tokenizer: sibling(&dir, "tokenizer.json").map(StoredFile::Disk),
        files: Vec::new(),
        planted: crate::attacks::planted::PlantedTrigger::read(&dir)?,
    })
}

fn is_commit_hash(rev: &str) -> bool {
    rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit())
}

/// One file of a hub repo: the cache first, then (unless offline) a download into the cache.
pub fn hub_file(
    settings: &HubSettings,
    repo_id: &str,
    revision: &str,
    file: &str,
) -> Result<PathBuf> {
    use hf_hub::{Cache, Repo, RepoType};
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    let cache = Cache::new(settings.cache_dir.clone());
    let pinned = pinned_snapshot(settings, &repo, revision, file);
    if is_commit_hash(revision) && pinned.is_file() {
        return Ok(pinned);
    }
    if let Some(p) = cache.repo(repo.clone()).get(file) {
        return Ok(p);
    }
    let spec = format!("{repo_id}@{revision}");
    if settings.offline {
        return Err(Error::Resolve {
            spec,
            reason: format!(
                "`{file}` is not in the HF cache at {} and HF_HUB_OFFLINE is set",
                settings.cache_dir.display()
            ),
        });
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache)
        .with_progress(true)
        .build()
        .map_err(|e| Error::Resolve {
            spec: spec.clone(),
            reason: e.to_string(),
        })?;
    api.repo(repo).get(file).map_err(|e| Error::Resolve {
        spec,
        reason: format!("download of `{file}` failed: {e}"),
    })
}

/// The files of a hub repo at `revision`, or None offline (then only the cache is consulted).
fn hub_listing(
    settings: &HubSettings,
    repo_id: &str,
    revision: &str,
) -> Result<Option<Vec<String>>> {
    use hf_hub::{Cache, Repo, RepoType};
    if settings.offline {
        return Ok(None);
    }
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    let info = hf_hub::api::sync::ApiBuilder::from_cache(Cache::new(settings.cache_dir.clone()))
        .build()
        .and_then(|api| api.repo(repo).info())
        .map_err(|e| Error::Resolve {
            spec: format!("{repo_id}@{revision}"),
            reason: format!("cannot list the repository's files: {e}"),
        })?;
    Ok(Some(
        info.siblings.into_iter().map(|s| s.rfilename).collect(),
    ))
}

/// Where a file of a commit's snapshot sits in the cache. A pinned commit needs no ref file: its
/// snapshot folder is named after it.
fn pinned_snapshot(
    settings: &HubSettings,
    repo: &hf_hub::Repo,
    revision: &str,
    file: &str,
) -> PathBuf {
    settings
        .cache_dir
        .join(repo.folder_name())
        .join("snapshots")
        .join(revision)
        .join(file)
}

/// Whether `file` is in the cache for `revision` (without downloading).
fn hub_cached(settings: &HubSettings, repo_id: &str, revision: &str, file: &str) -> bool {
    use hf_hub::{Cache, Repo, RepoType};
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    let pinned = pinned_snapshot(settings, &repo, revision, file);
    (is_commit_hash(revision) && pinned.is_file())
        || Cache::new(settings.cache_dir.clone())
            .repo(repo)
            .get(file)
            .is_some()
}

fn resolve_hub(
    settings: &HubSettings,
    repo_id: &str,
    revision: &str,
    entry: Option<&ManifestEntry>,
) -> Result<ResolvedWeights> {
    let spec = format!("{repo_id}@{revision}");
    // A manifest entry names its files; a bare repo id is a transformers or an open_clip repo,
    // told by the files it holds (the cache's, offline; the hub's listing, online).
    let listing = match entry {
        Some(_) => None,
        None => hub_listing(settings, repo_id, revision)?,
    };
    let present = |name: &str| {
        hub_cached(settings, repo_id, revision, name)
            || listing
                .as_ref()
                .is_some_and(|l| l.iter().any(|f| f == name))
    };
    let checkpoint_name = match entry {
        Some(e) => e.checkpoint.clone(),
        None => CHECKPOINT_NAMES
            .iter()
            .find(|n| present(n))
            .map(|n| n.to_string())
            .ok_or_else(|| Error::Resolve {
                spec: spec.clone(),
                reason: format!(
                    "none of {} is {}",
                    CHECKPOINT_NAMES.join(", "),
                    if listing.is_some() {
                        "in the repository".to_string()
                    } else {
                        format!(
                            "in the HF cache at {} (HF_HUB_OFFLINE is set)",
                            settings.cache_dir.display()
                        )
                    }
                ),
            })?,
    };
    let checkpoint = hub_file(settings, repo_id, revision, &checkpoint_name)?;
    // config and tokenizer are optional: an absent file is not an error, a failed download is.
    let optional = |name: &str| -> Result<Option<PathBuf>> {
        if listing
            .as_ref()
            .is_some_and(|l| !l.iter().any(|f| f == name))
        {
            return Ok(None);
        }
        match hub_file(settings, repo_id, revision, name) {
            Ok(p) => Ok(Some(p)),
            Err(Error::Resolve { .. }) if settings.offline => Ok(None),
            Err(e) => Err(e),
        }
    };
    let config = match entry.and_then(|e| e.config.as_deref()) {
        Some(name) => optional(name)?,
        None => {
            let mut found = None;
            for name in config_names_for(Path::new(&checkpoint_name)) {
                if entry.is_none() && !present(name) {
                    continue;
                }
                if let Some(p) = optional(name)? {
                    found = Some(p);
                    break;
                }
            }
            found
        }
    };
    let tokenizer = optional(
        entry
            .and_then(|e| e.tokenizer.as_deref())
            .unwrap_or("tokenizer.json"),
    )?;
    Ok(ResolvedWeights {
        source: format!("hub:{spec}"),
        checkpoint: StoredFile::Disk(checkpoint),
        config: config.map(StoredFile::Disk),
        tokenizer: tokenizer.map(StoredFile::Disk),
        files: Vec::new(),
        planted: None,
    })
}

/// The environment variable naming the source tree whose `models/` a manifest path is also
/// looked up in: unset or empty for the tree this binary was built from, `none` for no tree (an
/// installed binary's view, which the tests take), else the directory.
pub const SOURCE_TREE_VAR: &str = "RVPT_SOURCE_TREE";

/// The source tree manifest paths are looked up in after the working directory, if any.
pub fn source_tree() -> Option<PathBuf> {
    match std::env::var_os(SOURCE_TREE_VAR) {
        Some(v) if v == "none" => None,
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    }
}

fn resolve_manifest_path(entry: &ManifestEntry, rel: &str) -> Result<PathBuf> {
    // Relative to the working directory, else to the source tree.
    let here = PathBuf::from(rel);
    if here.exists() {
        return Ok(here);
    }
    let tree = source_tree();
    if let Some(built) = tree.as_ref().map(|t| t.join(rel)).filter(|p| p.exists()) {
        return Ok(built);
    }
    let looked = match &tree {
        Some(t) => format!("is neither here nor in {}", t.display()),
        None => format!("is not here (and {SOURCE_TREE_VAR}=none: no source tree)"),
    };
    Err(Error::Resolve {
        spec: entry.name.clone(),
        reason: format!(
            "its directory `{rel}` {looked}, and it is not embedded in this binary (embedded: \
             {}); run from a checkout of rvpt or set {SOURCE_TREE_VAR} to one",
            embedded::names().join(", ")
        ),
    })
}

/// The entry's files from the binary, if build.rs embedded them.
fn resolve_embedded(entry: &ManifestEntry) -> Result<Option<ResolvedWeights>> {
    let Some(model) = embedded::model(&entry.name).filter(|_| entry.embed) else {
        return Ok(None);
    };
    let file = |name: &str| {
        model
            .file(name)
            .map(StoredFile::Embedded)
            .ok_or_else(|| Error::Resolve {
                spec: entry.name.clone(),
                reason: format!("`{name}` is not among its embedded files"),
            })
    };
    Ok(Some(ResolvedWeights {
        source: format!("manifest:{} (embedded)", entry.name),
        checkpoint: file(&entry.checkpoint)?,
        config: entry.config.as_deref().map(file).transpose()?,
        tokenizer: entry.tokenizer.as_deref().map(file).transpose()?,
        files: Vec::new(),
        planted: None,
    }))
}

fn resolve_entry(settings: &HubSettings, entry: &ManifestEntry) -> Result<ResolvedWeights> {
    // Embedded first: the binary's manifest pins the digests of the very bytes it carries, so
    // it reads the same model wherever it runs, whatever the working directory holds. A copy on
    // disk is still reachable by its path (`--weights models/...`), which wins over names.
    let mut resolved = match (resolve_embedded(entry)?, &entry.path, &entry.repo) {
        (Some(embedded), _, _) => embedded,
        (None, Some(rel), _) => {
            let dir = resolve_manifest_path(entry, rel)?;
            let file = |name: &Option<String>| name.as_ref().map(|n| StoredFile::Disk(dir.join(n)));
            ResolvedWeights {
                source: format!("manifest:{} ({})", entry.name, dir.display()),
                checkpoint: StoredFile::Disk(dir.join(&entry.checkpoint)),
                config: file(&entry.config),
                tokenizer: file(&entry.tokenizer),
                files: Vec::new(),
                planted: crate::attacks::planted::PlantedTrigger::read(&dir)?,
            }
        }
        (None, None, Some(repo)) => {
            let rev = entry.revision.as_deref().unwrap_or("main");
            resolve_hub(settings, repo, rev, Some(entry))?
        }
        (None, None, None) => {
            return Err(Error::Resolve {
                spec: entry.name.clone(),
                reason: "manifest entry has neither `path` nor `repo`".into(),
            })
        }
    };
    resolved.files = verify_files(&resolved, &entry.sha256)?;
    match (&entry.trigger, entry.trigger_seed) {
        (Some(trigger), seed) => {
            // Canonical form, so `check` compares like with like.
            let parsed = crate::attacks::Trigger::parse(trigger).map_err(|e| Error::Resolve {
                spec: entry.name.clone(),
                reason: format!("its `trigger` does not parse: {e}"),
            })?;
            if parsed.is_seeded() && seed.is_none() {
                return Err(Error::Resolve {
                    spec: entry.name.clone(),
                    reason: format!(
                        "its trigger `{trigger}` is drawn from a seed: give `trigger_seed`"
                    ),
                });
            }
            resolved.planted = Some(crate::attacks::planted::PlantedTrigger {
                trigger: parsed.name(),
                seed: seed.unwrap_or(0),
                target: None,
            });
        }
        (None, Some(_)) => {
            return Err(Error::Resolve {
                spec: entry.name.clone(),
                reason: "`trigger_seed` without `trigger`".into(),
            })
        }
        (None, None) => {}
    }
    Ok(resolved)
}

/// Hashes every file and refuses any that differs from the digest the manifest pins.
pub fn verify_files(
    resolved: &ResolvedWeights,
    expected: &BTreeMap<String, String>,
) -> Result<Vec<WeightFile>> {
    let mut files = Vec::new();
    let roles = [
        ("checkpoint", Some(&resolved.checkpoint)),
        ("config", resolved.config.as_ref()),
        ("tokenizer", resolved.tokenizer.as_ref()),
    ];
    for (role, path) in roles {
        let Some(path) = path else { continue };
        if !path.exists() {
            return Err(Error::MissingFile(path.path().to_path_buf()));
        }
        let actual = path.sha256()?;
        let want = expected.get(&path.file_name()).cloned();
        if let Some(want) = &want {
            if !want.eq_ignore_ascii_case(&actual) {
                return Err(Error::ChecksumMismatch {
                    file: path.path().to_path_buf(),
                    expected: want.clone(),
                    actual,
                });
            }
        }
        files.push(WeightFile {
            role,
            path: path.clone(),
            sha256: actual,
            expected_sha256: want,
        });
    }
    Ok(files)
}

/// Resolves a `--weights` value against the manifest and the hub settings.
pub fn resolve_with(
    spec: &str,
    manifest: &Manifest,
    settings: &HubSettings,
) -> Result<ResolvedWeights> {
    let path = Path::new(spec);
    if path.exists() {
        let mut resolved = resolve_local(path)?;
        resolved.files = verify_files(&resolved, &BTreeMap::new())?;
        return Ok(resolved);
    }
    if let Some(entry) = manifest.get(spec) {
        return resolve_entry(settings, entry);
    }
    let (repo, revision) = spec.split_once('@').unwrap_or((spec, "main"));
    let looks_like_repo =
        repo.split('/').count() == 2 && !repo.starts_with('.') && !repo.ends_with('/');
    let is_file_like = [".safetensors", ".pt", ".pth", ".bin"]
        .iter()
        .any(|x| spec.ends_with(x));
    if looks_like_repo && !is_file_like {
        let mut resolved = resolve_hub(settings, repo, revision, None)?;
        resolved.files = verify_files(&resolved, &BTreeMap::new())?;
        return Ok(resolved);
    }
    // A bare word is most likely a mistyped model name: say what names there are.
    if !is_file_like && !spec.contains(['/', '\\', '.']) {
        let names: Vec<&str> = manifest.model.iter().map(|e| e.name.as_str()).collect();
        return Err(Error::Resolve {
            spec: spec.to_string(),
            reason: format!(
                "no such file, no model of that name in weights.toml (known: {}), and not a hub \
                 repo id (owner/name)",
                names.join(", ")
            ),
        });
    }
    Err(Error::MissingFile(path.to_path_buf()))
}

/// Resolves with the embedded manifest and the environment's hub settings.
pub fn resolve(spec: &str) -> Result<ResolvedWeights> {
    resolve_with(spec, &Manifest::embedded()?, &HubSettings::from_env())
}
