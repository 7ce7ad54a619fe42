//! An installed binary carries its demo: the models of `rvpt defend`'s default cases and of the
//! README tour are embedded, so a copy of the binary runs them in an empty folder with the source
//! tree out of reach (`RVPT_SOURCE_TREE=none`), and a model that is not embedded fails, saying so.

use rvpt::weights::{embedded, resolve, Manifest, StoredFile, SOURCE_TREE_VAR};
use std::path::Path;
use std::process::Command;

/// The built binary copied into a fresh folder, run there as an installed one would be.
struct Installed {
    dir: tempfile::TempDir,
}

/// Held while a binary is copied and while one is started: a child forked by another test while
/// the copy is open for writing inherits that descriptor until it execs, and executing the copy
/// meanwhile fails with "Text file busy". `spawn` returns once the child has exec'd.
static SPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Installed {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let _guard = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::copy(env!("CARGO_BIN_EXE_rvpt"), dir.path().join("rvpt")).unwrap();
        Self { dir }
    }

    /// Runs `./rvpt LINE` in the folder (LINE split at whitespace): (success, stdout, stderr).
    fn run(&self, line: &str) -> (bool, String, String) {
        let child = {
            let _guard = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
            Command::new(self.dir.path().join("rvpt"))
                .args(line.split_whitespace())
                .current_dir(self.dir.path())
                .env(SOURCE_TREE_VAR, "none")
                .env("HF_HUB_OFFLINE", "1")
                .env("RAYON_NUM_THREADS", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let o = child.wait_with_output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    fn ok(&self, line: &str) -> String {
        let (ok, out, err) = self.run(line);
        assert!(ok, "rvpt {line} failed:\n{out}\n--- stderr ---\n{err}");
        out
    }
}

/// The models the binary must carry: the default cases of `rvpt defend` and the tour's.
fn must_embed() -> Vec<&'static str> {
    let mut names: Vec<&str> = rvpt::toy::lab::TOY_CASES
        .iter()
        .filter(|c| c.default)
        .map(|c| c.weights)
        .collect();
    names.extend(["toy3-badnet-own", "toy3-clean", "toy-clean"]);
    names
}

#[test]
fn the_demo_models_are_embedded_and_match_their_digests() {
    let manifest = Manifest::embedded().unwrap();
    for name in must_embed() {
        let entry = manifest.get(name).unwrap();
        assert!(entry.embed, "{name} is not marked `embed = true`");
        let model = embedded::model(name).unwrap_or_else(|| panic!("{name} is not embedded"));
        for file in model.files {
            let want = entry.sha256.get(file.name).unwrap();
            assert_eq!(
                &rvpt::weights::sha256_bytes(file.bytes),
                want,
                "{}",
                file.label
            );
        }
    }
    // Only what the manifest marks: the other models stay on disk.
    assert!(embedded::model("toy2-badnet").is_none());
    assert_eq!(
        embedded::names().len(),
        manifest.model.iter().filter(|e| e.embed).count()
    );
}

#[test]
fn embedded_copy_wins_over_the_source_tree() {
    // The source tree is reachable from this test process, yet the name reads the binary's copy;
    // the tree's copy is still reachable by its path.
    let r = resolve("toy3-badnet-own").unwrap();
    assert_eq!(r.source, "manifest:toy3-badnet-own (embedded)");
    assert!(matches!(r.checkpoint, StoredFile::Embedded(_)));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/toy3/badnet-own");
    let local = resolve(dir.to_str().unwrap()).unwrap();
    assert!(local.checkpoint.disk_path().is_some());
    assert_eq!(local.checkpoint_sha256(), r.checkpoint_sha256());
}

#[test]
fn a_copied_binary_runs_the_tour_without_the_source_tree() {
    let bin = Installed::new();

    let info: serde_json::Value =
        serde_json::from_str(&bin.ok("info --weights toy3-badnet-own --json")).unwrap();
    assert_eq!(info["source"], "manifest:toy3-badnet-own (embedded)");
    let files = info["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "checkpoint, config, tokenizer");
    for f in files {
        assert!(f["path"]
            .as_str()
            .unwrap()
            .starts_with("embedded:toy3-badnet-own/"));
        assert_eq!(f["sha256"], f["expected_sha256"], "verified: {f}");
    }

    bin.ok("toy --out toy-test --per-class 3");
    bin.ok("toy --out toy-train --split train --per-class 3");
    let backdoor = "--data toy-test --trigger badnet:fixed,size=4 --target heart --json";
    bin.ok(&format!("eval --weights toy3-badnet-own {backdoor}"));
    bin.ok(&format!(
        "anatomy --weights toy3-badnet-own {backdoor} --reference toy3-clean"
    ));
    bin.ok(
        "defend --cases badnet-own --epochs 1 --shots 2 --prompt-length 4 --augment none \
         --methods none,rvpt --out quick",
    );
    assert!(bin.dir.path().join("quick/report.json").is_file());
    bin.ok(
        "attack --weights toy-clean --pairs toy-train/captions.csv --trigger blended:fixed \
         --target heart --poison-captions own --poison-rate 0.1 --epochs 1 --out poisoned --json",
    );
    assert!(bin.dir.path().join("poisoned/model.safetensors").is_file());
}

#[test]
fn a_model_that_is_not_embedded_is_named_as_such() {
    let bin = Installed::new();
    let (ok, _, err) = bin.run("info --weights toy2-badnet");
    assert!(!ok, "toy2-badnet resolved with no source tree");
    assert!(err.contains("toy2-badnet"), "{err}");
    assert!(err.contains("not embedded in this binary"), "{err}");
    assert!(err.contains(SOURCE_TREE_VAR), "{err}");
}
