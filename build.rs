//! Build-time facts the binary carries:
//! - the git commit it is built from (`RVPT_COMMIT`), for the provenance of every report:
//!   `<hash>`, `<hash>-dirty` with uncommitted changes, `unknown` outside a checkout;
//! - the files of the `weights.toml` entries marked `embed = true` (`embedded_weights.rs` in
//!   OUT_DIR, read by `src/weights/embedded.rs`), so an installed binary needs no source tree.

use std::path::Path;

fn main() {
    stamp_commit();
    embed_weights();
    println!("cargo:rerun-if-changed=build.rs");
}

fn stamp_commit() {
    let commit = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RVPT_COMMIT={commit}");
    // Restamp when HEAD moves, the index changes or a source changes (for `-dirty`).
    for path in [".git/HEAD", ".git/index", "src"] {
        if Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// Writes the table of embedded weights: one `EmbeddedModel` per `embed = true` entry, with
/// `include_bytes!` of each file it names (checkpoint, config, tokenizer). A build script can
/// only fail by panicking: an entry that cannot be embedded stops the build, naming it.
fn embed_weights() {
    println!("cargo:rerun-if-changed=weights.toml");
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&root);
    let text = std::fs::read_to_string(root.join("weights.toml"))
        .unwrap_or_else(|e| panic!("weights.toml: {e}"));
    let manifest: toml::Table = text.parse().unwrap_or_else(|e| panic!("weights.toml: {e}"));
    let entries = manifest
        .get("model")
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    let mut table = String::from("&[\n");
    for entry in &entries {
        if entry.get("embed").and_then(|e| e.as_bool()) != Some(true) {
            continue;
        }
        let field = |key: &str| entry.get(key).and_then(|v| v.as_str());
        let name = field("name").expect("weights.toml: an `embed` entry without `name`");
        let dir = field("path")
            .unwrap_or_else(|| panic!("weights.toml: `{name}` is embedded but has no `path`"));
        // What the runtime reads from memory: safetensors (a PyTorch zip is read from a file),
        // and the trigger from the manifest (a trigger.json beside the files is not embedded).
        let checkpoint = field("checkpoint").unwrap_or_default();
        if !checkpoint.ends_with(".safetensors") {
            panic!("weights.toml: `{name}` is embedded: its checkpoint must be .safetensors");
        }
        if root.join(dir).join("trigger.json").exists() && field("trigger").is_none() {
            panic!("weights.toml: `{name}` is embedded: declare its `trigger` (trigger.json is not embedded)");
        }
        table.push_str(&format!(
            "    EmbeddedModel {{\n        name: {name:?},\n        files: &[\n"
        ));
        for file in ["checkpoint", "config", "tokenizer"]
            .iter()
            .filter_map(|k| field(k))
        {
            let path = root.join(dir).join(file);
            if !path.is_file() {
                panic!(
                    "weights.toml: `{name}` is embedded but {} is missing",
                    path.display()
                );
            }
            println!("cargo:rerun-if-changed={}", path.display());
            let label = format!("embedded:{name}/{file}");
            table.push_str(&format!(
                "            EmbeddedFile {{ name: {file:?}, label: {label:?}, bytes: include_bytes!({:?}) }},\n",
                path.display().to_string()
            ));
        }
        table.push_str("        ],\n    },\n");
    }
    table.push_str("]\n");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = Path::new(&out).join("embedded_weights.rs");
    std::fs::write(&out, table).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
}
