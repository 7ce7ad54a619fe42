//! open_clip checkpoints load as what they are (tests/reference/make_open_clip_fixtures.py):
//! tiny random ViTs at ViT-B/16's and ViT-L/14's shape rules, under GELU and QuickGELU, equal to
//! open_clip (from `open_clip_config.json`) and to transformers (from its `config.json`) within
//! 1e-4; an open_clip GELU model from a hub-cache layout equal to open_clip in zero-shot
//! probability; a bare state dict's assumed activation stated; what rvpt does not build refused.

mod common;

use candle_core::{DType, Device, Tensor};
use common::run_rvpt as rvpt;
use common::{fixture, load_tensors, max_abs_diff};
use rvpt::engine::Engine;
use rvpt::model::{read_config_file, Activation, Checkpoint, Clip, ConfigSource};
use rvpt::weights::{resolve_with, HubSettings, Manifest};
use rvpt::Error;
use std::path::{Path, PathBuf};

const TOL: f32 = 1e-4;
const REV: &str = "89abcdef0123456789abcdef0123456789abcdef";

/// A fixture's checkpoint as open_clip ran it. openclip-b16 stores only the token-embedding rows
/// its prompts use (the rest are zero): the full `open_clip_model.safetensors` is rebuilt here.
fn checkpoint_of(variant: &str, dir: &Path) -> PathBuf {
    let bin = fixture(&format!("{variant}/open_clip_pytorch_model.bin"));
    if bin.is_file() {
        let out = dir.join("open_clip_pytorch_model.bin");
        std::fs::copy(&bin, &out).unwrap();
        return out;
    }
    let mut t = load_tensors(&format!("{variant}/weights.safetensors"));
    let rows = t.remove("token_rows").unwrap().to_vec1::<i64>().unwrap();
    let values = t.remove("token_embedding_rows").unwrap();
    let width = values.dim(1).unwrap();
    let mut full = vec![0f32; 49408 * width];
    let values = values
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (r, v) in rows.iter().zip(values) {
        full[*r as usize * width..(*r as usize + 1) * width].copy_from_slice(&v);
    }
    t.insert(
        "token_embedding.weight".into(),
        Tensor::from_vec(full, (49408, width), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap(),
    );
    let out = dir.join("open_clip_model.safetensors");
    candle_core::safetensors::save(&t, &out).unwrap();
    out
}

fn model_from(checkpoint: &Path, config: &Path) -> (Clip, ConfigSource) {
    let cfg = read_config_file(config).unwrap();
    let ckpt = Checkpoint::read_with(checkpoint, Some(cfg)).unwrap();
    ckpt.validate(checkpoint).unwrap();
    let source = ckpt.config_source;
    (ckpt.into_model(DType::F32, &Device::Cpu).unwrap(), source)
}

/// Softmax over the texts of scale * cos(image, text), as CLIP's zero-shot head.
fn probs(model: &Clip, image_embeds: &Tensor, text_embeds: &Tensor) -> Tensor {
    let logits = model.logits(image_embeds, text_embeds).unwrap();
    candle_nn::ops::softmax(&logits, 1).unwrap()
}

/// Embeddings and probabilities of `model` against `expected` under `prefix`; the worst error.
fn compare(
    model: &Clip,
    expected: &std::collections::HashMap<String, Tensor>,
    prefix: &str,
) -> f32 {
    let ie = model.image_embeds(&expected["pixel_values"]).unwrap();
    let te = model.text_embeds(&expected["input_ids"]).unwrap();
    let p = probs(model, &ie, &te);
    let errs = [
        (
            "image_embeds",
            max_abs_diff(&ie, &expected[&format!("{prefix}.image_embeds")]),
        ),
        (
            "text_embeds",
            max_abs_diff(&te, &expected[&format!("{prefix}.text_embeds")]),
        ),
        (
            "probs",
            max_abs_diff(&p, &expected[&format!("{prefix}.probs")]),
        ),
    ];
    println!("{prefix}: {errs:?}");
    for (what, err) in errs {
        assert!(err <= TOL, "{prefix} {what}: max abs error {err} > {TOL}");
    }
    errs[2].1
}

/// Each shape rule under each activation, from open_clip's config and from transformers' config
/// (the OpenAI-layout state dict with a transformers config.json); the other activation's config
/// does not match, so the activation is really what the config says.
#[test]
fn shape_rules_and_activations_match_open_clip_and_transformers() {
    for variant in ["openclip-b16", "openclip-l14", "openclip-bare"] {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = checkpoint_of(variant, dir.path());
        let expected = load_tensors(&format!("{variant}/expected.safetensors"));
        let bare = variant == "openclip-bare";
        for act in ["gelu", "quick_gelu"] {
            let open_clip_cfg = match (bare, act) {
                (false, "gelu") => "open_clip_config.json",
                (false, _) => "open_clip_config-quickgelu.json",
                (true, "gelu") => "ViT-tiny.json",
                (true, _) => "ViT-tiny-quickgelu.json",
            };
            let (model, source) =
                model_from(&ckpt, &fixture(&format!("{variant}/{open_clip_cfg}")));
            assert_eq!(source, ConfigSource::OpenClip);
            let want = if act == "gelu" {
                Activation::Gelu
            } else {
                Activation::QuickGelu
            };
            assert_eq!(model.config().vision_config.hidden_act, want);
            assert_eq!(model.config().text_config.hidden_act, want);
            let p = compare(&model, &expected, &format!("{act}.open_clip"));
            println!("{variant} {act} open_clip: max abs probability diff {p:.2e}");

            let (model, source) =
                model_from(&ckpt, &fixture(&format!("{variant}/config-{act}.json")));
            assert_eq!(source, ConfigSource::Given);
            let p = compare(&model, &expected, &format!("{act}.transformers"));
            println!("{variant} {act} transformers: max abs probability diff {p:.2e}");

            // The same weights under the other activation miss open_clip's embeddings.
            let other = if act == "gelu" { "quick_gelu" } else { "gelu" };
            let (wrong, _) = model_from(&ckpt, &fixture(&format!("{variant}/config-{other}.json")));
            let ie = wrong.image_embeds(&expected["pixel_values"]).unwrap();
            let err = max_abs_diff(&ie, &expected[&format!("{act}.open_clip.image_embeds")]);
            assert!(
                err > 100.0 * TOL,
                "{variant}: {other} passes for {act} ({err})"
            );
        }
    }
}

/// The shape rules themselves: heads = width / head_width, int(width * mlp_ratio), patch and
/// image size as open_clip's config states them.
#[test]
fn open_clip_shape_rules_are_read() {
    let (cfg, _) = read_config_file(&fixture("openclip-l14/open_clip_config.json")).unwrap();
    let v = &cfg.vision_config;
    assert_eq!((v.patch_size, v.image_size, v.hidden_size), (14, 42, 48));
    assert_eq!((v.num_attention_heads, v.intermediate_size), (3, 177));
    let t = &cfg.text_config;
    assert_eq!(
        (
            t.num_attention_heads,
            t.intermediate_size,
            t.max_position_embeddings
        ),
        (3, 96, 16)
    );
    assert_eq!(cfg.projection_dim, 24);
}

/// The hub-cache layout of `files` for commit [`REV`] (tests/common).
fn hub_repo(cache: &Path, repo: &str, files: &[(&str, &Path)]) {
    common::hub_repo(cache, repo, REV, files);
}

fn offline(cache: &Path) -> HubSettings {
    HubSettings {
        cache_dir: cache.to_path_buf(),
        offline: true,
    }
}

fn expected_meta(variant: &str) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("{variant}/expected.json"))).unwrap(),
    )
    .unwrap()
}

/// The done-when of issue 20: an open_clip GELU model in hub layout (`--weights org/name`,
/// HF_HUB_OFFLINE, open_clip_model.safetensors + open_clip_config.json) classifies the fixture
/// photos as open_clip does, through rvpt's own tokenizer and preprocessing (ImageNet mean/std
/// from `preprocess_cfg`), to 1e-4 in probability; and its QuickGELU twin as open_clip's.
#[test]
fn open_clip_hub_model_matches_open_clip_zero_shot() {
    let work = tempfile::tempdir().unwrap();
    let ckpt = checkpoint_of("openclip-b16", work.path());
    let cache = work.path().join("hub");
    let meta = expected_meta("openclip-b16");
    let labels: Vec<String> = meta["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    let images: Vec<PathBuf> = meta["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| fixture(&format!("images/{}", n.as_str().unwrap())))
        .collect();
    let expected = load_tensors("openclip-b16/expected.safetensors");
    for (repo, cfg, act) in [
        ("laion-test/tiny-b16", "open_clip_config.json", "gelu"),
        (
            "laion-test/tiny-b16-quickgelu",
            "open_clip_config-quickgelu.json",
            "quick_gelu",
        ),
    ] {
        let cfg = fixture(&format!("openclip-b16/{cfg}"));
        hub_repo(
            &cache,
            repo,
            &[
                ("open_clip_model.safetensors", &ckpt),
                ("open_clip_config.json", &cfg),
            ],
        );
        let resolved = resolve_with(repo, &Manifest { model: vec![] }, &offline(&cache)).unwrap();
        assert!(resolved
            .checkpoint
            .path()
            .ends_with("open_clip_model.safetensors"));
        assert!(resolved
            .config
            .as_ref()
            .unwrap()
            .path()
            .ends_with("open_clip_config.json"));
        let engine = Engine::from_resolved(resolved, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(engine.config_source, ConfigSource::OpenClip);
        assert_eq!(engine.layout, "openai");
        let pre = &engine.model.config().preprocess;
        assert_eq!(pre.mean, [0.485, 0.456, 0.406]);
        assert_eq!(pre.std, [0.229, 0.224, 0.225]);
        assert!(engine.weights_used().assumption.is_none());

        // rvpt's preprocessing of the photos against open_clip's transform.
        let ours: Vec<Tensor> = images
            .iter()
            .map(|p| {
                let unit = rvpt::image::load_unit(p, engine.image_size(), &Device::Cpu).unwrap();
                rvpt::image::normalize_with(&unit, pre).unwrap()
            })
            .collect();
        // Lossless files exactly; a JPEG within one 8-bit level (rvpt's decoder is not
        // libjpeg: tests/preprocess.rs).
        let level = 1.0 / 255.0 / pre.std.iter().cloned().fold(f32::INFINITY, f32::min);
        for (i, (o, path)) in ours.iter().zip(&images).enumerate() {
            let err = max_abs_diff(o, &expected["open_clip.zero_shot_pixels"].get(i).unwrap());
            let jpeg = path.extension().is_some_and(|e| e == "jpg");
            println!(
                "{repo}: {} preprocessed, max abs diff {err:.2e}",
                path.display()
            );
            let tol = if jpeg { level + 1e-5 } else { 1e-5 };
            assert!(
                err <= tol,
                "{}: preprocessing differs from open_clip's by {err}",
                path.display()
            );
        }

        let want = expected[&format!("{act}.open_clip.zero_shot_probs")]
            .to_vec2::<f32>()
            .unwrap();
        let encoder = engine.encoder(None).unwrap();
        // The model and tokenizer: rvpt's zero-shot head on open_clip's own preprocessed pixels
        // (un-normalised to the [0, 1] images the head takes), every image.
        let zs = engine
            .zero_shot(&*encoder, &labels, rvpt::text::Templates::Single)
            .unwrap();
        let per_channel = |v: &[f32; 3]| {
            Tensor::new(v, &Device::Cpu)
                .unwrap()
                .reshape((1, 3, 1, 1))
                .unwrap()
        };
        let unit = expected["open_clip.zero_shot_pixels"]
            .broadcast_mul(&per_channel(&pre.std))
            .unwrap()
            .broadcast_add(&per_channel(&pre.mean))
            .unwrap();
        let logits = zs.forward(&unit).unwrap().1;
        let ours = candle_nn::ops::softmax(&logits, 1).unwrap();
        let model_err = max_abs_diff(&ours, &Tensor::new(want.clone(), &Device::Cpu).unwrap());
        println!(
            "{repo} ({act}): zero-shot probability on open_clip's pixels, max abs diff {model_err:.2e}"
        );
        assert!(
            model_err <= TOL,
            "{repo}: zero-shot probabilities differ by {model_err}"
        );

        // Files to probabilities through rvpt's decoding and preprocessing: the lossless files
        // to 1e-4; the JPEG is reported (its decoder's one-level differences move a tiny random
        // model's probabilities by ~3e-3).
        let preds = engine
            .classify(&*encoder, &images, &labels, labels.len())
            .unwrap();
        let mut worst = 0f32;
        for ((pred, want), path) in preds.iter().zip(&want).zip(&images) {
            let mut err = 0f32;
            for (label, p) in &pred.top {
                let i = labels.iter().position(|l| l == label).unwrap();
                err = err.max((p - want[i]).abs());
            }
            println!(
                "{repo} ({act}): {} zero-shot probability max abs diff {err:.2e}",
                path.display()
            );
            if path.extension().is_some_and(|e| e != "jpg") {
                worst = worst.max(err);
            }
        }
        assert!(
            worst <= TOL,
            "{repo}: zero-shot probabilities differ by {worst}"
        );
    }
}

/// A hub repo in both layouts (as laion's: transformers `model.safetensors` + `config.json`
/// beside open_clip's files) resolves to the transformers pair; an open_clip-only repo whose
/// `config.json` is not a CLIPConfig (timm's) pairs the open_clip checkpoint with its own config.
#[test]
fn hub_repos_pair_each_checkpoint_with_its_config() {
    let work = tempfile::tempdir().unwrap();
    let ckpt = checkpoint_of("openclip-b16", work.path());
    let cache = work.path().join("hub");
    let timm = work.path().join("config.json");
    std::fs::write(
        &timm,
        r#"{"architecture": "vit_base_patch16_224", "num_classes": 0}"#,
    )
    .unwrap();
    let oc_cfg = fixture("openclip-b16/open_clip_config.json");
    hub_repo(
        &cache,
        "timm-test/tiny",
        &[
            ("open_clip_model.safetensors", &ckpt),
            ("open_clip_config.json", &oc_cfg),
            ("config.json", &timm),
        ],
    );
    let r = resolve_with(
        "timm-test/tiny",
        &Manifest { model: vec![] },
        &offline(&cache),
    )
    .unwrap();
    assert!(r.config.unwrap().path().ends_with("open_clip_config.json"));

    hub_repo(
        &cache,
        "both/tiny",
        &[
            ("model.safetensors", &fixture("tiny/model.safetensors")),
            ("config.json", &fixture("tiny/config.json")),
            ("open_clip_model.safetensors", &ckpt),
            ("open_clip_config.json", &oc_cfg),
        ],
    );
    let r = resolve_with("both/tiny", &Manifest { model: vec![] }, &offline(&cache)).unwrap();
    assert!(
        r.checkpoint.path().ends_with("model.safetensors")
            && !r.checkpoint.path().ends_with("open_clip_model.safetensors")
    );
    assert!(r.config.unwrap().path().ends_with("config.json"));

    match resolve_with("nobody/none", &Manifest { model: vec![] }, &offline(&cache)) {
        Err(Error::Resolve { reason, .. }) => {
            assert!(
                reason.contains("open_clip_model.safetensors") && reason.contains("HF_HUB_OFFLINE"),
                "{reason}"
            )
        }
        other => panic!("expected Error::Resolve, got {other:?}"),
    }
}

/// A state dict alone cannot tell QuickGELU from GELU: rvpt assumes QuickGELU (equal to open_clip
/// `-quickgelu`), says so in `info` and reports, and warns how to give the config; the bare
/// open_clip model config placed beside it as open_clip_config.json makes it the GELU model.
#[test]
fn a_bare_state_dict_states_its_assumed_activation() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint_of("openclip-bare", dir.path());
    let spec = ckpt.to_str().unwrap();
    let expected = load_tensors("openclip-bare/expected.safetensors");

    let engine = Engine::load(spec, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(engine.config_source, ConfigSource::Inferred);
    assert_eq!(
        engine.model.config().vision_config.hidden_act,
        Activation::QuickGelu
    );
    compare(&engine.model, &expected, "quick_gelu.open_clip");
    let assumption = engine
        .weights_used()
        .assumption
        .expect("assumption recorded");
    assert!(assumption.contains("QuickGELU") && assumption.contains("open_clip_config.json"));

    let (ok, out, err) = rvpt(&["info", "--weights", spec]);
    assert!(ok, "{err}");
    assert!(out.contains("activation  quick_gelu (assumed"), "{out}");
    assert!(
        err.contains("warning") && err.contains("open_clip_config.json"),
        "{err}"
    );
    let (ok, out, _) = rvpt(&["info", "--weights", spec, "--json"]);
    assert!(ok);
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["activation_assumed"], true);
    assert!(info["provenance"]["weights"]["assumption"]
        .as_str()
        .unwrap()
        .contains("QuickGELU"));

    std::fs::copy(
        fixture("openclip-bare/ViT-tiny.json"),
        dir.path().join("open_clip_config.json"),
    )
    .unwrap();
    let engine = Engine::load(spec, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(engine.config_source, ConfigSource::OpenClip);
    assert_eq!(
        engine.model.config().vision_config.hidden_act,
        Activation::Gelu
    );
    compare(&engine.model, &expected, "gelu.open_clip");
    assert!(engine.weights_used().assumption.is_none());
    let (ok, out, err) = rvpt(&["info", "--weights", spec]);
    assert!(ok, "{err}");
    assert!(
        out.contains("activation  gelu (stated by the config)"),
        "{out}"
    );
    assert!(!err.contains("warning"), "{err}");
}

/// What rvpt does not build is refused by name, from the config or from the state dict.
#[test]
fn unsupported_open_clip_models_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let base: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("openclip-l14/open_clip_config.json")).unwrap(),
    )
    .unwrap();
    let cases: [(&str, &str, serde_json::Value, &str); 9] = [
        (
            "vision_cfg",
            "layers",
            serde_json::json!([3, 4, 6, 3]),
            "ResNet",
        ),
        (
            "vision_cfg",
            "attentional_pool",
            serde_json::json!(true),
            "attentional_pool",
        ),
        (
            "vision_cfg",
            "no_ln_pre",
            serde_json::json!(true),
            "no_ln_pre",
        ),
        (
            "vision_cfg",
            "final_ln_after_pool",
            serde_json::json!(true),
            "final_ln_after_pool",
        ),
        (
            "vision_cfg",
            "pool_type",
            serde_json::json!("avg"),
            "pool_type",
        ),
        (
            "vision_cfg",
            "timm_model_name",
            serde_json::json!("vit_base_patch16_224"),
            "timm_model_name",
        ),
        (
            "text_cfg",
            "hf_model_name",
            serde_json::json!("xlm-roberta-base"),
            "hf_model_name",
        ),
        (
            "model_cfg",
            "init_logit_bias",
            serde_json::json!(-10),
            "init_logit_bias",
        ),
        (
            "text_cfg",
            "pool_type",
            serde_json::json!("last"),
            "pool_type",
        ),
    ];
    for (section, key, value, named) in cases {
        let mut cfg = base.clone();
        let target = match section {
            "model_cfg" => &mut cfg["model_cfg"],
            s => &mut cfg["model_cfg"][s],
        };
        target[key] = value;
        let path = dir.path().join("open_clip_config.json");
        std::fs::write(&path, cfg.to_string()).unwrap();
        match read_config_file(&path) {
            Err(Error::Unsupported { feature, .. }) => {
                assert!(feature.contains(named), "{key}: {feature}")
            }
            other => panic!(
                "{section}.{key}: expected Error::Unsupported, got {:?}",
                other.map(|_| ())
            ),
        }
    }
    let mut cfg = base.clone();
    cfg["preprocess_cfg"] = serde_json::json!({"resize_mode": "squash"});
    let path = dir.path().join("open_clip_config.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    assert!(
        matches!(read_config_file(&path), Err(Error::Unsupported { feature, .. }) if feature.contains("resize_mode"))
    );

    // From the state dict: a SigLIP logit bias is named, not dropped.
    let mut t = load_tensors("openclip-b16/weights.safetensors");
    t.insert(
        "logit_bias".into(),
        Tensor::new(&[-10f32], &Device::Cpu).unwrap(),
    );
    let path = dir.path().join("siglip.safetensors");
    candle_core::safetensors::save(&t, &path).unwrap();
    match Checkpoint::read(&path, None) {
        Err(Error::Unsupported { feature, .. }) => {
            assert!(feature.contains("logit_bias"), "{feature}")
        }
        other => panic!("expected Error::Unsupported, got {:?}", other.map(|_| ())),
    }
}

/// RVPT trains on an open_clip GELU model (prompts on the later half of its blocks), and its
/// results are keyed to the activation and preprocessing the config gave: the same checkpoint
/// under the QuickGELU config is another model, so the finished run is not reported for it.
#[test]
fn rvpt_trains_on_an_open_clip_model_and_its_key_records_the_activation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("model");
    std::fs::create_dir_all(&model).unwrap();
    checkpoint_of("openclip-b16", &model);
    let config = model.join("open_clip_config.json");
    std::fs::copy(fixture("openclip-b16/open_clip_config.json"), &config).unwrap();
    let (train, test, out) = (d.join("train"), d.join("test"), d.join("out"));
    for (folder, split) in [(&train, "train"), (&test, "test")] {
        let (ok, _, err) = rvpt(&[
            "toy",
            "--out",
            folder.to_str().unwrap(),
            "--split",
            split,
            "--per-class",
            "2",
        ]);
        assert!(ok, "{err}");
    }
    let args = [
        "defend",
        "--weights",
        model.to_str().unwrap(),
        "--data",
        train.to_str().unwrap(),
        "--test-data",
        test.to_str().unwrap(),
        "--trigger",
        "badnet:fixed,size=4",
        "--target",
        "heart",
        "--methods",
        "rvpt",
        "--epochs",
        "1",
        "--shots",
        "1",
        "--prompt-length",
        "2",
        "--prompt-blocks",
        "half",
        "--augment",
        "none",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    let (ok, stdout, err) = rvpt(&args);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let row = &report["cases"][0]["results"][0];
    assert_eq!(row["method"], "rvpt");
    assert_eq!(row["config"]["weights_model"]["activation"], "gelu");
    // `half` of a 2-block tower: the last block.
    assert_eq!(row["config"]["prompts"]["blocks"], "1..2");
    assert!(row["clean_accuracy"]["value"].as_f64().unwrap().is_finite());
    let weights = &report["cases"][0]["weights"];
    assert_eq!(weights["config_source"], "open-clip");
    assert_eq!(weights["config"]["vision_config"]["hidden_act"], "gelu");

    // Same checkpoint, same --out, QuickGELU config: refused, naming what changed.
    std::fs::copy(
        fixture("openclip-b16/open_clip_config-quickgelu.json"),
        &config,
    )
    .unwrap();
    let (ok, _, err) = rvpt(&args);
    assert!(
        !ok,
        "the GELU model's results were reported for the QuickGELU model"
    );
    assert!(err.contains("weights_model"), "{err}");
}
