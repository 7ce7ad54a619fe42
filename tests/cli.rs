//! The `rvpt` binary end to end on the tiny fixture model.

mod common;

use common::rvpt_command as rvpt;

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

/// Runs `rvpt args`: (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    common::run_rvpt(args)
}

/// `rvpt args` must succeed and print exactly one line of JSON (stdout is a pipe here).
fn json_line(args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = run(args);
    assert!(ok, "rvpt {args:?} failed: {err}");
    assert_eq!(out.lines().count(), 1, "rvpt {args:?}: not one line: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("rvpt {args:?}: {e}: {out}"))
}

/// `rvpt attack` on toy-clean, one epoch of batches of 10, poisoned pairs keeping their own
/// caption with the class word swapped for "heart"; JSON on stdout.
fn toy_attack(pairs: &str, out: &std::path::Path, trigger: &str, rate: &str) -> Vec<String> {
    [
        "attack",
        "--weights",
        "toy-clean",
        "--pairs",
        pairs,
        "--poison-captions",
        "own",
        "--trigger",
        trigger,
        "--target",
        "heart",
        "--poison-rate",
        rate,
        "--epochs",
        "1",
        "--batch-size",
        "10",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]
    .map(String::from)
    .to_vec()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A toy split of `per_class` images per class under `dir/name`.
fn toy_folder(dir: &std::path::Path, name: &str, split: &str, per_class: &str) -> String {
    let out = dir.join(name);
    let out = out.to_str().unwrap();
    let (ok, _, err) = run(&[
        "toy",
        "--out",
        out,
        "--split",
        split,
        "--per-class",
        per_class,
    ]);
    assert!(ok, "{err}");
    out.to_string()
}

/// One vocabulary: the image folder is `--data` and the trigger's seed `--trigger-seed` in every
/// command; the old spellings (`--images`, `--seed`) still work.
#[test]
fn image_folder_is_data_and_trigger_seed_is_trigger_seed_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path(), "toy", "test", "2");
    let trigger = ["--trigger", "badnet:fixed,size=4", "--target", "heart"];
    for (command, extra) in [
        ("eval", &trigger[..]),
        ("pr", &["--perturb", "flip,badnet:fixed,size=4"][..]),
        ("anatomy", &trigger[..]),
    ] {
        for (data_flag, seed_flag) in [("--data", "--trigger-seed"), ("--images", "--seed")] {
            let mut args = vec![command, "--weights", "toy2-badnet", data_flag, &data];
            args.extend_from_slice(extra);
            args.extend_from_slice(&[seed_flag, "7", "--json"]);
            let v = json_line(&args);
            assert!(v.is_object(), "{args:?}");
        }
        // The seed is the one the trigger was planted with: another is refused, by either name.
        let mut args = vec![command, "--weights", "toy2-badnet", "--data", &data];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--trigger-seed", "8"]);
        let (ok, _, err) = run(&args);
        assert!(!ok && err.contains("planted with"), "{args:?}: {err}");
    }
    let out = dir.path().join("patch.safetensors");
    for flag in ["--data", "--images"] {
        json_line(&[
            "attack",
            "optimise-patch",
            "--weights",
            "toy2-clean",
            flag,
            &data,
            "--target",
            "heart",
            "--out",
            out.to_str().unwrap(),
            "--size",
            "4",
            "--steps",
            "1",
            "--json",
        ]);
    }
}

/// `--prompts` is refused where it would do nothing, instead of being silently ignored.
#[test]
fn prompts_are_refused_where_they_are_not_used() {
    for args in [
        &[
            "info",
            "--weights",
            "tiny-random",
            "--prompts",
            "x.safetensors",
        ][..],
        &[
            "attack",
            "--weights",
            "toy-clean",
            "--prompts",
            "x.safetensors",
            "--pairs",
            "p.csv",
            "--trigger",
            "badnet",
            "--target",
            "heart",
            "--out",
            "o",
        ][..],
        &[
            "attack",
            "optimise-patch",
            "--prompts",
            "x.safetensors",
            "--data",
            "d",
            "--target",
            "heart",
            "--out",
            "o",
        ][..],
    ] {
        let (ok, _, err) = run(args);
        assert!(!ok, "{args:?} should fail");
        assert!(
            err.contains("unexpected argument '--prompts'"),
            "{args:?}: {err}"
        );
    }
}

fn assert_provenance(v: &serde_json::Value, what: &str, engine: bool) {
    let p = &v["provenance"];
    assert_eq!(p["rvpt_version"], env!("CARGO_PKG_VERSION"), "{what}: {v}");
    assert!(
        p["rvpt_commit"].as_str().is_some_and(|c| !c.is_empty()),
        "{what}"
    );
    assert!(
        p["date"].as_str().is_some_and(|d| d.ends_with('Z')),
        "{what}"
    );
    if engine {
        let w = &p["weights"];
        let sha = w["sha256"].as_str().unwrap_or_default();
        assert!(
            sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
            "{what}: sha256 {sha:?}"
        );
        assert!(w["config_source"].is_string(), "{what}: {w}");
        assert!(w["layout"].is_string(), "{what}: {w}");
        assert!(w["source"].is_string(), "{what}: {w}");
        assert!(w["config"]["vision_config"].is_object(), "{what}: {w}");
    }
}

/// Every `--json` report says where it came from; `toy` and `attack` take `--json` too.
#[test]
fn every_json_report_carries_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let test = toy_folder(dir.path(), "test", "test", "2");
    let train = toy_folder(dir.path(), "train", "train", "2");

    let v = json_line(&["toy", "--out", &test, "--per-class", "2", "--json"]);
    assert_provenance(&v, "toy", false);
    assert_eq!(v["images"], 20);
    assert_eq!(v["per_class"], 2);
    assert_eq!(v["classes"].as_array().unwrap().len(), 10);
    assert_eq!(v["split"], "test");

    let out = dir.path().join("poisoned");
    let pairs = format!("{train}/captions.csv");
    let v = json_line(&strs(&toy_attack(
        &pairs,
        &out,
        "badnet:fixed,size=4",
        "0.1",
    )));
    assert_provenance(&v, "attack", true);
    assert_eq!(v["poisoned"], 2);
    // Each poisoned pair keeps its own caption with the class word swapped for the target.
    assert_eq!(v["poison_captions"], "own-caption");
    let examples = v["example_captions"].as_array().unwrap();
    assert_eq!(examples.len(), 2);
    assert!(
        examples
            .iter()
            .all(|c| c.as_str().unwrap().contains("heart")),
        "{examples:?}"
    );
    assert_eq!(v["pair_count"], 20);
    assert_eq!(v["trigger_seed"], 7);
    assert_eq!(v["steps"], 2);
    assert!(v["final_loss"].as_f64().is_some_and(f64::is_finite), "{v}");
    assert!(out.join("model.safetensors").is_file());

    let v = json_line(&[
        "eval",
        "--weights",
        "toy2-badnet",
        "--data",
        &test,
        "--trigger",
        "badnet:fixed,size=4",
        "--target",
        "heart",
        "--json",
    ]);
    assert_provenance(&v, "eval", true);
    assert_eq!(v["provenance"]["device"], "cpu");
    assert_eq!(v["provenance"]["dtype"], "f32");
    assert!(v["report"]["clean_accuracy"]["value"].is_number());

    let v = json_line(&["info", "--weights", "tiny-random", "--json"]);
    assert_provenance(&v, "info", true);
    let chelsea = common::fixture("images/chelsea.jpg");
    let v = json_line(&[
        "classify",
        "--weights",
        "tiny-random",
        "--labels",
        "cat,dog",
        "--json",
        chelsea.to_str().unwrap(),
    ]);
    assert_provenance(&v, "classify", true);
    let v = json_line(&[
        "pr",
        "--weights",
        "toy2-badnet",
        "--data",
        &test,
        "--perturb",
        "flip",
        "--json",
    ]);
    assert_provenance(&v, "pr", true);
    let v = json_line(&[
        "anatomy",
        "--weights",
        "toy2-badnet",
        "--data",
        &test,
        "--trigger",
        "badnet:fixed,size=4",
        "--target",
        "heart",
        "--json",
    ]);
    assert_provenance(&v, "anatomy", true);
    let v = json_line(&[
        "attack",
        "optimise-patch",
        "--weights",
        "toy2-clean",
        "--data",
        &test,
        "--target",
        "heart",
        "--out",
        dir.path().join("patch.safetensors").to_str().unwrap(),
        "--size",
        "4",
        "--steps",
        "1",
        "--json",
    ]);
    assert_provenance(&v, "optimise-patch", true);
}

/// Text output names the ASR convention as `--json` does.
#[test]
fn eval_text_names_the_asr_convention_in_kebab_case() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path(), "toy", "test", "2");
    let args = [
        "eval",
        "--weights",
        "toy2-badnet",
        "--data",
        &data,
        "--trigger",
        "badnet:fixed,size=4",
        "--target",
        "heart",
    ];
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    assert!(out.contains("exclude-target"), "{out}");
    assert!(!out.contains("ExcludeTarget"), "{out}");
    let (ok, out, err) = run(&[&args[..], &["--asr-all"]].concat());
    assert!(ok, "{err}");
    assert!(out.contains(", all"), "{out}");
}

/// Every flag of every subcommand says what it does, and the trigger syntax is in the help with
/// the specs the embedded toy models need.
#[test]
fn every_flag_has_a_description_and_the_trigger_syntax_is_documented() {
    let commands: [&[&str]; 9] = [
        &["defend"],
        &["classify"],
        &["info"],
        &["eval"],
        &["pr"],
        &["attack"],
        &["attack", "optimise-patch"],
        &["anatomy"],
        &["toy"],
    ];
    for command in commands {
        for help in ["-h", "--help"] {
            let (ok, out, err) = run(&[command, &[help]].concat());
            assert!(ok, "{command:?} {help}: {err}");
            let lines: Vec<&str> = out.lines().collect();
            let mut flags = 0;
            for (i, line) in lines.iter().enumerate() {
                let body = line.trim_start();
                let indent = line.len() - body.len();
                if !body.starts_with('-') || indent > 6 {
                    continue;
                }
                flags += 1;
                // `--flag <VALUE>  description`, or the description on the next, deeper line;
                // a bare `[default: …]` is not one.
                let described = |d: &str| !d.is_empty() && !d.starts_with(['[', '-']);
                let same_line = body
                    .split_once("  ")
                    .is_some_and(|(_, d)| described(d.trim()));
                let next_line = lines.get(i + 1).is_some_and(|next| {
                    let b = next.trim_start();
                    described(b) && next.len() - b.len() > indent
                });
                assert!(
                    same_line || next_line,
                    "rvpt {} {help}: `{}` has no description",
                    command.join(" "),
                    body
                );
            }
            assert!(flags >= 3, "{command:?} {help}: no flags found in {out}");
        }
    }
    for command in [&["eval"][..], &["anatomy"], &["attack"]] {
        let (_, out, _) = run(&[command, &["--help"]].concat());
        for spec in ["badnet:fixed,size=4", "blended:fixed", "wanet:k=4,s=8"] {
            assert!(out.contains(spec), "{command:?} --help lacks {spec}");
        }
        assert!(out.contains("--trigger-seed"), "{command:?}");
    }
    let (_, out, _) = run(&["pr", "--help"]);
    for spec in ["noise:STD", "blur:K", "brightness:B", "hue:H", "flip"] {
        assert!(out.contains(spec), "pr --help lacks {spec}");
    }
}

/// `--poison-source`: only pairs naming that class are poisoned (the rate, a share of all pairs,
/// is capped by them); a class no caption names, or a poisoner that picks its own pairs, is
/// refused by name.
#[test]
fn a_source_specific_attack_poisons_only_its_class() {
    let dir = tempfile::tempdir().unwrap();
    let train = toy_folder(dir.path(), "train", "train", "2");
    let pairs = format!("{train}/captions.csv");
    let out = dir.path().join("poisoned");
    let attack = |source: &str, trigger: &str| -> Vec<String> {
        let mut args = toy_attack(&pairs, &out, trigger, "0.5");
        args.extend(["--poison-source".to_string(), source.to_string()]);
        args
    };
    let v = json_line(&strs(&attack("circle", "badnet:fixed,size=4")));
    // 10 of 20 pairs asked for; the 2 circles are all there are.
    assert_eq!(v["poisoned"], 2, "{v}");
    assert_eq!(v["poison_source"], "circle");
    assert_eq!(v["example_captions"].as_array().unwrap().len(), 2);
    for (source, trigger, needle) in [
        ("sculpture", "badnet:fixed,size=4", "no caption"),
        ("circle", "lc", "choose their own pairs"),
    ] {
        let (ok, _, err) = run(&strs(&attack(source, trigger)));
        assert!(!ok, "{source} {trigger} should fail");
        assert!(
            err.contains("--poison-source") && err.contains(needle),
            "{source} {trigger}: {err}"
        );
    }
}
