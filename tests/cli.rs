//! The `rvpt` binary end to end on the tiny fixture model.

mod common;

use std::process::Command;

fn rvpt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rvpt"));
    c.env("HF_HUB_OFFLINE", "1");
    c
}

#[test]
fn classify_json_ranks_every_label() {
    let out = rvpt()
        .args([
            "classify",
            "--weights",
            "tiny-random",
            "--labels",
            "cat,coffee,astronaut",
            "--json",
            "--top-k",
            "3",
        ])
        .arg(common::fixture("images/chelsea.jpg"))
        .arg(common::fixture("images/coffee.png"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 2);
    for p in preds {
        let top = p["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let total: f64 = top.iter().map(|t| t[1].as_f64().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-4, "probabilities sum to {total}");
    }
}

#[test]
fn info_reports_config_counts_and_checksums() {
    let out = rvpt()
        .args(["info", "--weights", "tiny-random", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["layout"], "hf");
    assert_eq!(v["config"]["vision_config"]["num_hidden_layers"], 12);
    assert_eq!(v["parameters"]["total"], 1_416_417);
    assert_eq!(v["files"][0]["sha256"], v["files"][0]["expected_sha256"]);
}

#[test]
fn bad_input_exits_with_a_named_error() {
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "classify",
                "--weights",
                "tiny-random",
                "--labels",
                " , ",
                "x.jpg",
            ],
            "label list is empty",
        ),
        (
            &[
                "classify",
                "--weights",
                "tiny-random",
                "--labels",
                "a",
                "/no/such.jpg",
            ],
            "file not found: /no/such.jpg",
        ),
        (
            &["info", "--weights", "/no/such/model.safetensors"],
            "file not found",
        ),
        (
            &[
                "classify",
                "--weights",
                "tiny-random",
                "--device",
                "cuda:0",
                "--labels",
                "a",
                "x.jpg",
            ],
            "--features cuda",
        ),
    ];
    for (args, needle) in cases {
        let out = rvpt().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle),
            "{args:?}: stderr {err:?} lacks {needle:?}"
        );
    }
}

/// B5: `--limit N` evaluates a seeded random sample from every class, not the first N images in
/// folder order (which, in a class-ordered folder, are the first classes only).
#[test]
fn limit_samples_every_class_with_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("toy");
    let o = rvpt()
        .args(["toy", "--out", data.to_str().unwrap(), "--per-class", "3"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sample = |seed: &str| -> serde_json::Value {
        let o = rvpt()
            .args([
                "pr",
                "--weights",
                "toy2-clean",
                "--perturb",
                "flip",
                "--json",
            ])
            .args(["--images", data.to_str().unwrap(), "--limit", "6"])
            .args(["--sample-seed", seed])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["perturbations"][0]["resistivity"]["samples"], 6);
        v
    };
    let (a, b) = (sample("0"), sample("0"));
    assert_eq!(a["sample"]["images"], 6);
    // 6 of 30 images in folder order would be 2 classes.
    assert!(
        a["sample"]["classes"].as_u64().unwrap() >= 4,
        "{}",
        a["sample"]
    );
    assert_eq!(
        a["perturbations"], b["perturbations"],
        "same seed, same sample"
    );
}
