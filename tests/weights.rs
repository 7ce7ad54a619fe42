//! Weight resolution: manifest entries, local paths, the HF cache layout through hf-hub with
//! HF_HUB_OFFLINE, checksums, and the named errors for bad input.

mod common;

use candle_core::{DType, Device, Tensor};
use common::fixture;
use rvpt::weights::{resolve_with, sha256_file, HubSettings, Manifest};
use rvpt::Error;
use std::path::{Path, PathBuf};

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

/// The tiny fixture in a hub cache, as huggingface_hub lays it out (tests/common).
fn make_hub_cache(root: &Path, repo: &str) -> PathBuf {
    let (model, config) = (
        fixture("tiny/model.safetensors"),
        fixture("tiny/config.json"),
    );
    common::hub_repo(
        root,
        repo,
        REV,
        &[("model.safetensors", &model), ("config.json", &config)],
    )
}

fn offline(dir: &Path) -> HubSettings {
    HubSettings {
        cache_dir: dir.to_path_buf(),
        offline: true,
    }
}

fn manifest_for(repo: &str, revision: &str, model_sha: &str) -> Manifest {
    Manifest::parse(
        &format!(
            r#"
[[model]]
name = "lab/tiny"
repo = "{repo}"
revision = "{revision}"
checkpoint = "model.safetensors"
config = "config.json"
[model.sha256]
"model.safetensors" = "{model_sha}"
"#
        ),
        Path::new("test.toml"),
    )
    .unwrap()
}

#[test]
fn hub_cache_loads_offline_by_repo_id_and_pinned_entry() {
    let cache = tempfile::tempdir().unwrap();
    make_hub_cache(cache.path(), "rvpt-test/tiny");
    let settings = offline(cache.path());
    let digest = sha256_file(&fixture("tiny/model.safetensors")).unwrap();

    // A bare repo id follows refs/main.
    let r = resolve_with("rvpt-test/tiny", &Manifest { model: vec![] }, &settings).unwrap();
    assert!(r.checkpoint.path().starts_with(cache.path()));
    assert!(r.source.starts_with("hub:rvpt-test/tiny@main"));
    assert!(r.tokenizer.is_none(), "no tokenizer.json in this repo");

    // A manifest entry pinned to the commit, with its checksum verified.
    let m = manifest_for("rvpt-test/tiny", REV, &digest);
    let r = resolve_with("lab/tiny", &m, &settings).unwrap();
    assert_eq!(r.files[0].expected_sha256.as_deref(), Some(digest.as_str()));

    // And the model loads from there, equal to the golden outputs.
    let engine = rvpt::engine::Engine::from_resolved(r, &Device::Cpu, DType::F32).unwrap();
    let g = common::load_tensors("parity.safetensors");
    let ours = engine.model.image_embeds(&g["pixel_values"]).unwrap();
    assert!(common::max_abs_diff(&ours, &g["image_embeds"]) <= 1e-4);
}

#[test]
fn offline_miss_is_a_named_error() {
    let cache = tempfile::tempdir().unwrap();
    match resolve_with(
        "nobody/absent",
        &Manifest { model: vec![] },
        &offline(cache.path()),
    ) {
        Err(Error::Resolve { spec, reason }) => {
            assert!(spec.contains("nobody/absent"));
            assert!(reason.contains("HF_HUB_OFFLINE"), "{reason}");
        }
        other => panic!("expected Error::Resolve, got {other:?}"),
    }
}

#[test]
fn checksum_mismatch_names_file_expected_and_actual() {
    let cache = tempfile::tempdir().unwrap();
    make_hub_cache(cache.path(), "rvpt-test/tiny");
    let wrong = "0".repeat(64);
    let m = manifest_for("rvpt-test/tiny", REV, &wrong);
    match resolve_with("lab/tiny", &m, &offline(cache.path())) {
        Err(e @ Error::ChecksumMismatch { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("model.safetensors") && msg.contains(&wrong),
                "{msg}"
            );
            let actual = sha256_file(&fixture("tiny/model.safetensors")).unwrap();
            assert!(msg.contains(&actual), "{msg}");
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
}

#[test]
fn embedded_manifest_pins_vit_b32_and_tiny() {
    let m = Manifest::embedded().unwrap();
    let vit = m.get("openai/clip-vit-base-patch32").unwrap();
    assert_eq!(vit.revision.as_deref().map(str::len), Some(40));
    assert!(vit.sha256.contains_key(&vit.checkpoint));
    let tiny = m.get("tiny-random").unwrap();
    let settings = offline(Path::new("/nonexistent"));
    let r = resolve_with("tiny-random", &m, &settings).unwrap();
    assert!(r
        .files
        .iter()
        .all(|f| f.expected_sha256.as_ref() == Some(&f.sha256)));
    assert_eq!(tiny.checkpoint, "model.safetensors");
}

#[test]
fn local_directory_and_file_resolve() {
    let m = Manifest { model: vec![] };
    let s = offline(Path::new("/nonexistent"));
    let dir = resolve_with(fixture("tiny").to_str().unwrap(), &m, &s).unwrap();
    assert!(dir.checkpoint.path().ends_with("model.safetensors"));
    assert!(dir.config.is_some());
    let file = resolve_with(fixture("tiny-openai/model.pt").to_str().unwrap(), &m, &s).unwrap();
    assert!(file.checkpoint.path().ends_with("model.pt"));
    assert!(file
        .config
        .as_ref()
        .unwrap()
        .path()
        .ends_with("config.json"));
}

#[test]
fn missing_file_is_named() {
    let m = Manifest { model: vec![] };
    match resolve_with("no/such/file.safetensors", &m, &offline(Path::new("/x"))) {
        Err(Error::MissingFile(p)) => assert!(p.ends_with("file.safetensors")),
        other => panic!("expected MissingFile, got {other:?}"),
    }
    // A bare word is taken for a model name: the error lists the names there are.
    let m = manifest_for("org/model", "main", "0");
    match resolve_with("toy-clena", &m, &offline(Path::new("/x"))) {
        Err(Error::Resolve { spec, reason }) => {
            assert_eq!(spec, "toy-clena");
            assert!(reason.contains(&m.model[0].name), "{reason}");
        }
        other => panic!("expected Error::Resolve, got {other:?}"),
    }
    match rvpt::model::checkpoint::read_tensors(Path::new("/no/such.pt")) {
        Err(Error::MissingFile(_)) => {}
        other => panic!("expected MissingFile, got {other:?}"),
    }
}

fn tiny_config() -> rvpt::model::ClipConfig {
    rvpt::model::ClipConfig::from_file(&fixture("tiny/config.json")).unwrap()
}

/// Writes the tiny checkpoint with one tensor altered by `edit`.
fn altered_checkpoint(
    dir: &Path,
    edit: impl Fn(&mut std::collections::HashMap<String, Tensor>),
) -> PathBuf {
    let mut t = rvpt::model::checkpoint::read_tensors(&fixture("tiny/model.safetensors")).unwrap();
    edit(&mut t);
    let path = dir.join("altered.safetensors");
    candle_core::safetensors::save(&t, &path).unwrap();
    path
}

#[test]
fn wrong_tensor_shape_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let name = "vision_model.encoder.layers.7.mlp.fc1.weight";
    let path = altered_checkpoint(dir.path(), |t| {
        t.insert(
            name.into(),
            Tensor::zeros((128, 64), DType::F16, &Device::Cpu).unwrap(),
        );
    });
    match rvpt::model::load_clip(&path, Some(tiny_config()), DType::F32, &Device::Cpu) {
        Err(Error::TensorShape {
            name: n,
            expected,
            actual,
            ..
        }) => {
            assert_eq!(n, name);
            assert_eq!(expected, vec![256, 64]);
            assert_eq!(actual, vec![128, 64]);
        }
        other => panic!("expected TensorShape, got {:?}", other.err()),
    }
}

#[test]
fn missing_tensor_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let name = "text_model.final_layer_norm.bias";
    let path = altered_checkpoint(dir.path(), |t| {
        t.remove(name);
    });
    match rvpt::model::load_clip(&path, Some(tiny_config()), DType::F32, &Device::Cpu) {
        Err(Error::MissingTensor { name: n, .. }) => assert_eq!(n, name),
        other => panic!("expected MissingTensor, got {:?}", other.err()),
    }
}

#[test]
fn corrupt_checkpoint_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("truncated.safetensors");
    let bytes = std::fs::read(fixture("tiny/model.safetensors")).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let pt = dir.path().join("garbage.pt");
    std::fs::write(&pt, b"definitely not a zip archive").unwrap();
    for path in [st, pt] {
        match rvpt::model::checkpoint::read_tensors(&path) {
            Err(Error::Checkpoint { path: p, .. }) => assert_eq!(p, path),
            other => panic!(
                "expected Checkpoint error for {path:?}, got {:?}",
                other.err()
            ),
        }
    }
}

#[test]
fn non_clip_state_dict_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.safetensors");
    let mut t = std::collections::HashMap::new();
    t.insert(
        "encoder.weight".to_string(),
        Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&t, &path).unwrap();
    match rvpt::model::Checkpoint::read(&path, None) {
        Err(Error::Checkpoint { reason, .. }) => assert!(reason.contains("not a CLIP state dict")),
        other => panic!("expected Checkpoint error, got {:?}", other.err()),
    }
}

/// An OpenAI-layout checkpoint without its config: a width that OpenAI's heads = width / 64
/// does not divide (the tiny fixture's text tower, width 16, 2 heads) is refused with the
/// reason instead of loading with a guessed head count; with its config.json it loads, and
/// `rvpt info` says where the config came from.
#[test]
fn an_uninferable_openai_checkpoint_is_refused_without_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let lone = dir.path().join("model.pt");
    std::fs::copy(fixture("tiny-openai/model.pt"), &lone).unwrap();
    let cpu = candle_core::Device::Cpu;
    let err = rvpt::engine::Engine::load(lone.to_str().unwrap(), &cpu, candle_core::DType::F32)
        .err()
        .expect("loaded with a guessed head count");
    let msg = err.to_string();
    assert!(
        msg.contains("width 16 is not a multiple of 64") && msg.contains("config.json"),
        "{msg}"
    );
    let with_config = fixture("tiny-openai");
    let engine =
        rvpt::engine::Engine::load(with_config.to_str().unwrap(), &cpu, candle_core::DType::F32)
            .unwrap();
    assert_eq!(engine.config_source, rvpt::model::ConfigSource::Given);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rvpt"))
        .args(["info", "--weights", with_config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("config      config.json"));
}
