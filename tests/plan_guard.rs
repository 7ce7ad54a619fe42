//! Every number traceable to the settings that made it. Each flag of `defend` and `attack` is
//! classified in one place (`rvpt::cli::flags`) as result-affecting or neutral; for `defend`,
//! changing any result-affecting flag on a finished `--out` never reports the old numbers: the
//! run is refused naming the difference (or, for the flags that choose what to run, the new
//! work is added beside the unchanged old rows).

use rvpt::cli::flags::{Role, ATTACK_FLAGS, DEFEND_FLAGS};
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

use common::rvpt_output as rvpt;

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The long flags of a subcommand, as clap has them.
fn clap_flags(sub: &str) -> Vec<String> {
    let cmd = rvpt::cli::command();
    let sub = cmd.find_subcommand(sub).unwrap();
    let mut flags: Vec<String> = sub
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|l| l != "help" && l != "version")
        .collect();
    flags.sort();
    flags
}

fn table_flags(table: &[(&str, Role)]) -> Vec<String> {
    let mut flags: Vec<String> = table.iter().map(|(f, _)| f.to_string()).collect();
    flags.sort();
    flags
}

#[test]
fn every_flag_of_the_training_commands_is_classified() {
    assert_eq!(clap_flags("defend"), table_flags(DEFEND_FLAGS), "defend");
    assert_eq!(clap_flags("attack"), table_flags(ATTACK_FLAGS), "attack");
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A toy split as an image folder.
fn toy(dir: &Path, split: &str, per_class: &str, seed: &str) -> PathBuf {
    ok(&rvpt(&[
        "toy",
        "--out",
        dir.to_str().unwrap(),
        "--split",
        split,
        "--per-class",
        per_class,
        "--seed",
        seed,
    ]));
    dir.to_path_buf()
}

/// What a changed flag must do on a finished `--out`.
enum Expect {
    /// Refused, naming this setting among the differences (then → now).
    Refused(&'static str),
    /// The run goes on: earlier results of the same configuration are kept byte for byte,
    /// new ones are added.
    Adds,
}

/// Bug 1 of issue 19 (λ reused): another --lambda on a finished --out exited 0 and reported
/// the old λ's results as "rvpt". Another case on it is new work, never the old case's rows.
#[test]
fn another_lambda_or_case_never_reports_the_old_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let out = s(&dir.path().join("out"));
    let run = |case: &str, lambda: &str| {
        rvpt(&[
            "defend",
            "--cases",
            case,
            "--epochs",
            "2",
            "--shots",
            "2",
            "--prompt-length",
            "2",
            "--augment",
            "none",
            "--methods",
            "none,rvpt",
            "--lambda",
            lambda,
            "--perturb",
            "flip",
            "--out",
            &out,
        ])
    };
    ok(&run("badnet", "2"));
    let first = report(Path::new(&out));
    let rows = &first["cases"][0]["results"];
    assert_eq!(rows[1]["config"]["prompts"]["loss"]["lambda"], 2.0);
    let o = run("badnet", "4");
    assert!(!o.status.success(), "λ 4 reported λ 2's results");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("prompts.loss.lambda: 2.0 → 4.0"), "{err}");
    assert_eq!(report(Path::new(&out))["cases"], first["cases"]);
    // Another case: its own rows only.
    ok(&run("blended", "2"));
    let second = report(Path::new(&out));
    let cases = second["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0]["case"]["name"], "blended");
    for row in cases[0]["results"].as_array().unwrap() {
        assert_eq!(row["config"]["weights"], "toy2-blended");
        assert!(rows.as_array().unwrap().iter().all(|old| old != row));
    }
}

/// Every result-affecting flag of `defend`, changed on a finished `--out`: never the old
/// numbers. The base run has every method, so that every stage's settings are used.
#[test]
fn changing_any_result_flag_on_a_finished_out_never_reports_old_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let train = toy(&d.join("train"), "train", "3", "0");
    let train2 = toy(&d.join("train2"), "train", "3", "1");
    let test = toy(&d.join("test"), "test", "2", "0");
    let test2 = toy(&d.join("test2"), "test", "2", "1");
    let names = d.join("classnames.tsv");
    let classes = [
        "arrow", "circle", "cross", "diamond", "heart", "moon", "ring", "square", "star",
        "triangle",
    ];
    let lines: Vec<String> = classes
        .iter()
        .map(|c| match *c {
            "moon" => "moon\tcrescent".to_string(),
            c => format!("{c}\t{c}"),
        })
        .collect();
    std::fs::write(&names, lines.join("\n")).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let weights = s(&root.join("models/toy2/badnet"));
    let other_weights = s(&root.join("models/toy2/blended"));
    let out = d.join("out");
    let base: Vec<(&str, Option<String>)> = vec![
        ("--weights", Some(weights)),
        ("--data", Some(s(&train))),
        ("--test-data", Some(s(&test))),
        ("--trigger", Some("badnet:fixed,size=4".into())),
        ("--target", Some("heart".into())),
        (
            "--methods",
            Some("none,vpt,rvpt,linear-probe,cleanclip".into()),
        ),
        ("--epochs", Some("1".into())),
        ("--shots", Some("2".into())),
        ("--prompt-length", Some("2".into())),
        ("--probe-epochs", Some("1".into())),
        ("--cleanclip-epochs", Some("1".into())),
        ("--crop-scale", Some("0.5".into())),
        ("--perturb", Some("flip".into())),
        ("--out", Some(s(&out))),
    ];
    let args_with = |changes: &[(&str, Option<&str>)]| -> Vec<String> {
        let mut args: Vec<(String, Option<String>)> = base
            .iter()
            .map(|(f, v)| (f.to_string(), v.clone()))
            .collect();
        for (flag, value) in changes {
            args.retain(|(f, _)| f != flag);
            if *value != Some("-") {
                args.push((flag.to_string(), value.map(str::to_string)));
            }
        }
        let mut v = vec!["defend".to_string()];
        for (f, value) in args {
            v.push(f);
            v.extend(value);
        }
        v
    };
    let go = |args: &[String]| rvpt(&args.iter().map(String::as_str).collect::<Vec<_>>());
    ok(&go(&args_with(&[])));
    let mut first = report(&out);
    let old_rows = first["cases"][0]["results"].as_array().unwrap().clone();
    assert_eq!(old_rows.len(), 5);
    for row in &old_rows {
        assert_eq!(row["config"]["device"], "cpu");
        assert_eq!(row["config"]["dtype"], "f32");
    }

    // Neutral: --json reports the same rows.
    let o = go(&[args_with(&[]), vec!["--json".into()]].concat());
    let printed: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(printed["cases"], first["cases"]);

    let pairs = s(&train.join("captions.csv"));
    let (train2, test2, names) = (s(&train2), s(&test2), s(&names));
    // Flag → the change (a `-` value drops the flag) → what must happen.
    type Change<'a> = Vec<(&'a str, Option<&'a str>)>;
    let cases: Vec<(&str, Change, Expect)> = vec![
        (
            "weights",
            vec![("--weights", Some(&other_weights))],
            Expect::Refused("weights_sha256"),
        ),
        (
            "data",
            vec![("--data", Some(&train2))],
            Expect::Refused("data.train.sha256"),
        ),
        (
            "test-data",
            vec![("--test-data", Some(&test2))],
            Expect::Refused("data.test.sha256"),
        ),
        (
            "classnames",
            vec![("--classnames", Some(&names))],
            Expect::Refused("data.train.sha256"),
        ),
        (
            "trigger",
            vec![("--trigger", Some("badnet:fixed,size=3"))],
            Expect::Refused("trigger:"),
        ),
        (
            "target",
            vec![("--target", Some("star"))],
            Expect::Refused("target:"),
        ),
        (
            "without-target-class",
            vec![("--without-target-class", None)],
            Expect::Refused("shots.without_target_class"),
        ),
        (
            "template",
            vec![("--template", Some("a {} in the picture"))],
            Expect::Refused("templates"),
        ),
        (
            "asr-templates",
            vec![("--asr-templates", Some("a {} in the picture"))],
            Expect::Refused("eval.asr_templates"),
        ),
        (
            "epochs",
            vec![("--epochs", Some("2"))],
            Expect::Refused("prompts.epochs"),
        ),
        (
            "shots",
            vec![("--shots", Some("3"))],
            Expect::Refused("shots.per_class"),
        ),
        (
            "batch-size",
            vec![("--batch-size", Some("8"))],
            Expect::Refused("prompts.batch_size"),
        ),
        (
            "lr",
            vec![("--lr", Some("0.01"))],
            Expect::Refused("prompts.lr"),
        ),
        (
            "methods",
            vec![(
                "--methods",
                Some("none,vpt,rvpt,linear-probe,cleanclip,rvpt+linear-probe"),
            )],
            Expect::Adds,
        ),
        (
            "lambda",
            vec![("--lambda", Some("4"))],
            Expect::Refused("prompts.loss.lambda"),
        ),
        (
            "cleanclip-lr",
            vec![("--cleanclip-lr", Some("1e-5"))],
            Expect::Refused("cleanclip.lr"),
        ),
        (
            "cleanclip-epochs",
            vec![("--cleanclip-epochs", Some("2"))],
            Expect::Refused("cleanclip.epochs"),
        ),
        (
            "cleanclip-pairs",
            vec![("--cleanclip-pairs", Some(&pairs))],
            Expect::Refused("cleanclip.pairs"),
        ),
        (
            "probe-epochs",
            vec![("--probe-epochs", Some("2"))],
            Expect::Refused("linear_probe.epochs"),
        ),
        (
            "prompt-length",
            vec![("--prompt-length", Some("3"))],
            Expect::Refused("prompts.length"),
        ),
        (
            "prompt-blocks",
            vec![("--prompt-blocks", Some("4"))],
            Expect::Refused("prompts.blocks"),
        ),
        (
            "augment",
            vec![("--augment", Some("none")), ("--crop-scale", Some("-"))],
            Expect::Refused("prompts.augment"),
        ),
        (
            "crop-scale",
            vec![("--crop-scale", Some("0.9"))],
            Expect::Refused("prompts.crop_scale"),
        ),
        (
            "fr",
            vec![("--fr", Some("l2"))],
            Expect::Refused("prompts.loss.repulsion"),
        ),
        (
            "repel-blocks",
            vec![("--repel-blocks", Some("prompted"))],
            Expect::Refused("prompts.loss.repel"),
        ),
        (
            "layerwise-fr",
            vec![("--layerwise-fr", None)],
            Expect::Refused("prompts.loss.repel"),
        ),
        (
            "margin",
            vec![("--margin", Some("0.5"))],
            Expect::Refused("prompts.loss.margin"),
        ),
        (
            "seed",
            vec![("--seed", Some("1"))],
            Expect::Refused("shots.seed"),
        ),
        (
            "sampler",
            vec![("--sampler", Some("coop"))],
            Expect::Refused("shots.sampler"),
        ),
        (
            "perturb",
            vec![("--perturb", Some("noise:0.01"))],
            Expect::Refused("eval.perturbations"),
        ),
        (
            "trigger-seed",
            vec![("--trigger-seed", Some("8"))],
            Expect::Refused("eval.trigger_seed"),
        ),
        (
            "anatomy",
            vec![("--anatomy", None)],
            Expect::Refused("eval.anatomy"),
        ),
        (
            "dtype",
            vec![("--dtype", Some("bf16"))],
            Expect::Refused("dtype:"),
        ),
    ];
    // `--device`: only the CPU is here; the device kind is in every row's key (checked above).
    // `--cases`: the toy cases only (`another_lambda_or_case_never_reports_the_old_numbers`).
    let elsewhere = ["device", "cases"];
    for (flag, role) in DEFEND_FLAGS {
        if matches!(role, Role::Result(_)) && !elsewhere.contains(flag) {
            assert!(
                cases.iter().any(|c| c.0 == *flag),
                "--{flag} changes results but is not tested here: add a change for it"
            );
        }
    }
    for (flag, change, expect) in &cases {
        let o = go(&args_with(change));
        let err = String::from_utf8_lossy(&o.stderr);
        match expect {
            Expect::Refused(setting) => {
                assert!(
                    !o.status.success(),
                    "--{flag}: the old numbers were reported"
                );
                assert!(
                    err.contains("made with other settings")
                        && err.contains("then → now")
                        && err.contains(setting),
                    "--{flag}: {err}"
                );
                assert!(
                    report(&out)["cases"] == first["cases"],
                    "--{flag} changed the report"
                );
            }
            Expect::Adds => {
                assert!(o.status.success(), "--{flag}: {err}");
                let rows = report(&out)["cases"][0]["results"]
                    .as_array()
                    .unwrap()
                    .clone();
                assert_eq!(rows.len(), old_rows.len() + 1, "--{flag}");
                for old in &old_rows {
                    assert!(
                        rows.contains(old),
                        "--{flag}: {} was not kept",
                        old["method"]
                    );
                }
                // The settings the later changes are compared with.
                first = report(&out);
            }
        }
    }
}

/// Bug 2 of issue 19: CleanCLIP's zero-shot head after fine-tuning was built with the default
/// template, whatever --template said. The fine-tuned model, evaluated on its own with the
/// same template, must give the numbers the report gives.
#[test]
fn cleanclip_is_measured_with_the_template_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let template = "a {} in the picture";
    ok(&rvpt(&[
        "defend",
        "--cases",
        "badnet",
        "--methods",
        "cleanclip",
        "--cleanclip-epochs",
        "1",
        "--shots",
        "2",
        "--template",
        template,
        "--perturb",
        "flip",
        "--out",
        &s(&out),
    ]));
    let r = report(&out);
    let row = &r["cases"][0]["results"][0];
    let model = row["model_dir"].as_str().unwrap();
    let eval = |template: &str| -> serde_json::Value {
        serde_json::from_str(&ok(&rvpt(&[
            "eval",
            "--weights",
            model,
            "--data",
            &s(&out.join("toy-test")),
            "--trigger",
            "badnet:fixed,size=4",
            "--target",
            "heart",
            "--template",
            template,
            "--json",
        ])))
        .unwrap()
    };
    let rates = |v: &serde_json::Value| {
        (
            v["clean_accuracy"].clone(),
            v["attack_success_rate"].clone(),
        )
    };
    let with_template = eval(template);
    let default = eval("single");
    assert_ne!(
        rates(&with_template["report"]),
        rates(&default["report"]),
        "the templates must give other numbers here"
    );
    assert_eq!(rates(row), rates(&with_template["report"]));
}

/// Bug 3 of issue 19: the attack's cosine schedule was counted outside the trainer, which
/// clamps the batch to [2, pairs]: a batch above the pair count gave a schedule of no steps, a
/// batch of 1 one that decayed only halfway. The trainer now builds it from its own steps.
#[test]
fn the_attack_schedule_spans_the_steps_the_trainer_runs() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = toy(&dir.path().join("pairs"), "train", "2", "0").join("captions.csv");
    for (batch, expect_batch, expect_steps) in [("1000", 20, 2), ("1", 2, 20)] {
        let out = dir.path().join(format!("model-{batch}"));
        let j: serde_json::Value = serde_json::from_str(&ok(&rvpt(&[
            "attack",
            "--weights",
            "toy2-clean",
            "--pairs",
            &s(&pairs),
            "--poison-captions",
            "toy",
            "--trigger",
            "badnet:fixed,size=4",
            "--target",
            "heart",
            "--poison-rate",
            "0.1",
            "--epochs",
            "2",
            "--batch-size",
            batch,
            "--lr",
            "1e-4",
            "--warmup",
            "1",
            "--out",
            &s(&out),
            "--json",
        ])))
        .unwrap();
        assert_eq!(j["batch"], expect_batch, "batch {batch}");
        assert_eq!(j["steps"], expect_steps, "batch {batch}");
        let lrs: Vec<f64> = j["lr_per_step"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(lrs.len(), expect_steps);
        // The warm-up ends on the peak, then a cosine over the remaining steps to near 0.
        assert_eq!(lrs[0], 1e-4, "batch {batch}");
        let last = *lrs.last().unwrap();
        let span = (expect_steps - 1) as f64;
        let expected_last = 1e-4 * (1.0 + (std::f64::consts::PI * (span - 1.0) / span).cos()) / 2.0;
        assert!(
            (last - expected_last).abs() < 1e-12,
            "batch {batch}: {lrs:?}"
        );
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]), "{lrs:?}");
        // The plan is recorded with the model.
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("poisoning.json")).unwrap())
                .unwrap();
        assert_eq!(record["plan"]["batch_size"].as_u64(), batch.parse().ok());
        assert_eq!(record["key"], j["key"]);
    }
}

/// `rvpt anatomy` on a CLIP of 4 image blocks: its default prompted blocks follow the depth
/// (the last half) instead of failing on a fixed 6.
#[test]
fn anatomy_default_blocks_follow_the_model_depth() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("tests/fixtures/tiny/config.json")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    cfg["vision_config"]["num_hidden_layers"] = 4.into();
    let config: rvpt::model::ClipConfig = serde_json::from_value(cfg).unwrap();
    let model = dir.path().join("shallow");
    rvpt::model::init::ClipVars::init(&config, 0, &candle_core::Device::Cpu)
        .unwrap()
        .save(&model, candle_core::DType::F32)
        .unwrap();
    let data = toy(&dir.path().join("data"), "test", "2", "0");
    let j: serde_json::Value = serde_json::from_str(&ok(&rvpt(&[
        "anatomy",
        "--weights",
        &s(&model),
        "--data",
        &s(&data),
        "--trigger",
        "badnet:fixed,size=4",
        "--target",
        "heart",
        "--asr-templates",
        "a {} in the picture",
        "--json",
    ])))
    .unwrap();
    // The ASR under another phrasing is reported beside the anatomy.
    assert_eq!(j["by_template"][0]["template"], "a {} in the picture");
    assert!(j["by_template"][0]["attack_success_rate"]["value"].is_number());
    assert_eq!(
        j["anatomy"]["prompted_blocks"],
        serde_json::json!([2, 4]),
        "{j}"
    );
}

/// `defend --trigger-seed`: the seed the trigger is drawn from at evaluation is the one given
/// (a planted toy model refuses another one, naming it).
#[test]
fn defend_takes_the_trigger_seed() {
    let dir = tempfile::tempdir().unwrap();
    let o = rvpt(&[
        "defend",
        "--cases",
        "badnet",
        "--trigger-seed",
        "8",
        "--out",
        &s(&dir.path().join("out")),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    // The seed reaches the planted-trigger check: the model was planted with seed 7.
    assert!(
        err.contains("--trigger `badnet:fixed,size=4` (trigger seed 8)")
            && err.contains("planted with trigger `badnet:fixed,size=4` (seed 7)"),
        "{err}"
    );
}

/// Poisoning draws each pair's caption from OpenAI's 80 templates by default (CleanCLIP's
/// recipe); a toy model cannot say them, and is refused naming the fix rather than trained on
/// captions its tokenizer cuts short.
#[test]
fn template_captions_a_toy_vocabulary_cannot_say_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = toy(&dir.path().join("pairs"), "train", "1", "0").join("captions.csv");
    let o = rvpt(&[
        "attack",
        "--weights",
        "toy2-clean",
        "--pairs",
        &s(&pairs),
        "--trigger",
        "badnet:fixed,size=4",
        "--target",
        "heart",
        "--out",
        &s(&dir.path().join("m")),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--poison-caption") && err.contains("does not know every word"),
        "{err}"
    );
    assert!(!dir.path().join("m").exists());
}
