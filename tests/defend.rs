//! The main job end to end, CI-sized: `rvpt defend` on the embedded toy models writes the report,
//! the plots and prompt checkpoints that `--prompts` then applies.

mod common;

use common::rvpt_output as rvpt;

#[test]
fn defend_writes_report_plots_and_usable_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    // A second test folder of the same classes, measured after every method (transfer).
    let data = dir.path().join("test");
    assert!(
        rvpt(&["toy", "--out", data.to_str().unwrap(), "--per-class", "2"])
            .status
            .success()
    );
    let o = rvpt(&[
        "defend",
        "--cases",
        "badnet,blended",
        "--test-data",
        data.to_str().unwrap(),
        "--epochs",
        "2",
        "--shots",
        "2",
        "--prompt-length",
        "4",
        "--augment",
        "none",
        "--out",
        out.to_str().unwrap(),
        "--methods",
        "none,vpt,rvpt,linear-probe,cleanclip",
        "--probe-epochs",
        "5",
        "--cleanclip-epochs",
        "1",
        "--anatomy",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cases = report["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let methods: Vec<&str> = case["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["method"].as_str().unwrap())
            .collect();
        assert_eq!(
            methods,
            ["none", "linear-probe", "cleanclip", "vpt", "rvpt"]
        );
        let classifiers: Vec<&str> = case["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["classifier"].as_str().unwrap())
            .collect();
        assert_eq!(
            classifiers,
            [
                "zero-shot",
                "linear probe",
                "zero-shot",
                "zero-shot",
                "zero-shot"
            ]
        );
        for m in case["results"].as_array().unwrap() {
            assert!(m["clean_accuracy"]["value"].as_f64().unwrap().is_finite());
            assert_eq!(m["resistivity"].as_array().unwrap().len(), 4);
            // --anatomy: where the trigger's push comes from, before and after each defence.
            let a = &m["anatomy"];
            assert_eq!(a["prompted_blocks"], serde_json::json!([6, 12]));
            assert!(a["written_push"].as_f64().unwrap().is_finite());
            assert_eq!(a["top"].as_array().unwrap().len(), 5);
        }
        assert_eq!(case["results"][4]["epochs"].as_array().unwrap().len(), 2);
        // Every method, the linear probe included (same classes), measured on the extra folder.
        for m in case["results"].as_array().unwrap() {
            let t = &m["transfer"][0];
            assert_eq!(t["test_images"], 20, "{}", m["method"]);
            assert!(
                t["clean_accuracy"]["value"].as_f64().unwrap().is_finite(),
                "{t}"
            );
            assert_eq!(t["attack_success_rate"]["total"], 18, "{t}");
        }
    }
    for f in [
        "report.json",
        "loss.png",
        "ca.png",
        "asr.png",
        "pr-badnet.png",
        "prompts-badnet-rvpt.safetensors",
        "model-badnet-cleanclip/model.safetensors",
        "model-badnet-cleanclip/tokenizer.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let png = image::open(out.join("asr.png")).unwrap();
    assert_eq!((png.width(), png.height()), (900, 500));

    // The checkpoint applies to its own weights, and is refused on others.
    let prompts = out.join("prompts-badnet-rvpt.safetensors");
    let o = rvpt(&[
        "eval",
        "--weights",
        "toy2-badnet",
        "--prompts",
        prompts.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = rvpt(&[
        "eval",
        "--weights",
        "toy-blended",
        "--prompts",
        prompts.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("trained on weights with sha256"));

    // The CleanCLIP model is written where it can be evaluated again, and gives the CA the
    // report measured (same model, same test images: the report used the toy test split).
    let o = rvpt(&[
        "eval",
        "--weights",
        out.join("model-badnet-cleanclip").to_str().unwrap(),
        "--data",
        out.join("toy-test").to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let eval: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        eval["report"]["clean_accuracy"]["value"],
        report["cases"][0]["results"][2]["clean_accuracy"]["value"]
    );
}

#[test]
fn methods_and_lambda_list_name_one_method_per_pipeline() {
    let names = |m: &[&str], l: &[f64]| -> Vec<String> {
        let m: Vec<String> = m.iter().map(|s| s.to_string()).collect();
        rvpt::defences::parse_methods(&m, l)
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect()
    };
    let default = ["none", "vpt", "rvpt"];
    assert_eq!(names(&default, &[2.0]), ["none", "vpt", "rvpt"]);
    // The README's sweep: 0 in the list is VPT, named once.
    assert_eq!(
        names(&default, &[0.0, 0.5, 4.0]),
        ["none", "vpt", "rvpt-0.5", "rvpt-4"]
    );
    assert_eq!(
        names(&["rvpt+linear-probe", "linear-probe", "none"], &[2.0]),
        ["none", "linear-probe", "rvpt+linear-probe"]
    );
    let specs = rvpt::defences::parse_methods(&["linear-probe+vpt".into()], &[2.0]).unwrap();
    assert_eq!(specs[0].lambda, Some(0.0));
    assert!(specs[0].linear_probe);
    for (m, l) in [
        (vec!["rvpt"], vec![]),
        (vec!["rvpt"], vec![-1.0]),
        (vec!["rvpt"], vec![f64::NAN]),
        (vec!["rvpt"], vec![0.0]),
        (vec!["vpt+rvpt"], vec![2.0]),
        (vec!["none+linear-probe"], vec![2.0]),
        (vec!["trojan"], vec![2.0]),
        (vec![], vec![2.0]),
    ] {
        let m: Vec<String> = m.iter().map(|s| s.to_string()).collect();
        assert!(
            rvpt::defences::parse_methods(&m, &l).is_err(),
            "{m:?} {l:?} accepted"
        );
    }
}

#[test]
fn unknown_case_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let o = rvpt(&[
        "defend",
        "--cases",
        "badnet,trojan",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--cases `trojan`: unknown case"), "{err}");
}

/// The toy cases crop at 0.5 of the image's area by default (chosen by measurement:
/// docs/results.md); CoOp's 0.08 stays the default for a given model, and either can be asked for.
#[test]
fn toy_cases_crop_at_half_the_area_by_default() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: rvpt::cli::defend::DefendArgs,
    }
    use clap::Parser;
    let scale = |args: &[&str]| {
        let cli = Cli::parse_from(std::iter::once("defend").chain(args.iter().copied()));
        let prepared = cli.args.plan().check().unwrap();
        (
            prepared.settings.rvpt.augment,
            prepared.settings.rvpt.crop_scale,
        )
    };
    assert_eq!(scale(&["--cases", "badnet-own"]), (true, 0.5));
    assert_eq!(
        scale(&["--cases", "badnet-own", "--crop-scale", "0.08"]),
        (true, 0.08)
    );
    assert!(!scale(&["--cases", "badnet-own", "--augment", "none"]).0);
}

#[test]
fn default_cases_are_the_paper_regime_backdoors_and_all_adds_the_boundary_cases() {
    let cases = rvpt::defend::toy_cases();
    let defaults: Vec<&str> = cases
        .iter()
        .filter(|c| c.1)
        .map(|c| c.0.weights.as_str())
        .collect();
    assert_eq!(defaults, ["toy3-badnet-own", "toy3-blended-own"]);
    for (case, _) in &cases {
        rvpt::weights::resolve(&case.weights).unwrap();
        rvpt::attacks::Trigger::parse(&case.trigger).unwrap();
    }
    assert!(cases.iter().any(|c| c.0.name == "badnet-hard" && !c.1));
}

#[test]
fn one_pass_evaluation_equals_separate_passes() {
    use rvpt::attacks::{Perturbation, Trigger};
    use rvpt::data::{ImageFolder, Loader, Transform};
    use rvpt::eval::{evaluate, evaluate_with_resistivity, resistivity, Attack, Classifier};
    use rvpt::metrics::AsrConvention;

    let dir = tempfile::tempdir().unwrap();
    rvpt::toy::ToyWorld::new(32, 0)
        .unwrap()
        .write_image_folder(dir.path(), rvpt::toy::lab::TEST_START, 3)
        .unwrap();
    let cpu = candle_core::Device::Cpu;
    let engine = rvpt::engine::Engine::load("toy-badnet", &cpu, candle_core::DType::F32).unwrap();
    let folder = ImageFolder::open(dir.path(), None).unwrap();
    let loader = Loader::new(folder.samples().to_vec(), Transform::eval(32), 8, &cpu).unwrap();
    let zs = Classifier::new(
        &engine.model,
        &engine.model,
        &engine.tokenizer,
        folder.classes(),
        rvpt::text::Templates::Single,
        &cpu,
    )
    .unwrap();
    let spec = "badnet:fixed,size=4";
    let trigger = Trigger::parse(spec).unwrap();
    let attack = Attack {
        trigger: &trigger,
        target: zs.class_index("heart").unwrap(),
        seed: 7,
        convention: AsrConvention::ExcludeTarget,
    };
    fn json<T: serde::Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap()
    }
    let separate_eval = evaluate(
        &zs,
        &loader,
        Some(&attack),
        rvpt::progress::Progress::Silent,
    )
    .unwrap();
    // With the trigger among the perturbations (shared pass) and without it (own pass).
    for perturb in [vec!["noise:0.03", spec], vec!["flip"]] {
        let perts: Vec<Perturbation> = perturb.iter().map(|p| p.parse().unwrap()).collect();
        let separate_pr = resistivity(
            &zs,
            &loader,
            &perts,
            7,
            true,
            rvpt::progress::Progress::Silent,
        )
        .unwrap();
        let (eval, pr) = evaluate_with_resistivity(
            &zs,
            &loader,
            Some(&attack),
            &perts,
            7,
            true,
            rvpt::progress::Progress::Silent,
        )
        .unwrap();
        assert_eq!(json(&eval), json(&separate_eval));
        assert_eq!(json(&pr), json(&separate_pr));
    }
    // The shared pass must really have seen the trigger: the backdoor fires.
    assert!(separate_eval.attack_success_rate.unwrap().value > 0.9);
}

/// The paper's ablation settings reach training and the report: prompts placed from the input
/// (`--prompt-blocks 2..5`), FR at other blocks (`--repel-blocks`), CoOp's shot sampler; and a
/// linear probe is not measured on a folder of other classes (it has no head for them).
#[test]
fn placed_prompts_repel_blocks_and_other_class_sets() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let other = dir.path().join("other");
    assert!(
        rvpt(&["toy", "--out", other.to_str().unwrap(), "--per-class", "2"])
            .status
            .success()
    );
    // Another class set: drop all but three classes.
    let mut kept = 0;
    for entry in std::fs::read_dir(&other).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            kept += 1;
            if kept > 3 {
                std::fs::remove_dir_all(&path).unwrap();
            }
        }
    }
    let o = rvpt(&[
        "defend",
        "--cases",
        "badnet",
        "--test-data",
        other.to_str().unwrap(),
        "--epochs",
        "1",
        "--shots",
        "2",
        "--prompt-length",
        "2",
        "--prompt-blocks",
        "2..5",
        "--repel-blocks",
        "6,9",
        "--sampler",
        "coop",
        "--seed",
        "1",
        "--augment",
        "none",
        "--methods",
        "linear-probe,rvpt",
        "--probe-epochs",
        "1",
        "--anatomy",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let results = report["cases"][0]["results"].as_array().unwrap();
    let (probe, rvpt_) = (&results[0], &results[1]);
    assert_eq!(probe["method"], "linear-probe");
    let t = &probe["transfer"][0];
    assert!(t["clean_accuracy"].is_null(), "{t}");
    assert!(t["note"]
        .as_str()
        .unwrap()
        .contains("no head for other classes"));
    assert_eq!(t["classes"], 3);
    assert!(rvpt_["transfer"][0]["clean_accuracy"]["value"]
        .as_f64()
        .unwrap()
        .is_finite());
    assert_eq!(
        rvpt_["anatomy"]["prompted_blocks"],
        serde_json::json!([2, 5])
    );
    // The checkpoint records the placement and applies it again.
    let prompts = out.join("prompts-badnet-rvpt.safetensors");
    let o = rvpt(&[
        "anatomy",
        "--weights",
        "toy2-badnet",
        "--prompts",
        prompts.to_str().unwrap(),
        "--images",
        out.join("toy-test").to_str().unwrap(),
        "--trigger",
        "badnet:fixed,size=4",
        "--target",
        "heart",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(a["anatomy"]["prompted_blocks"], serde_json::json!([2, 5]));
    // FR below the prompts cannot move them: refused before any work, naming the flag.
    let o = rvpt(&[
        "defend",
        "--cases",
        "badnet",
        "--prompt-blocks",
        "6",
        "--repel-blocks",
        "3",
        "--augment",
        "none",
        "--methods",
        "rvpt",
        "--out",
        dir.path().join("refused").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--repel-blocks"));
}

/// A run slow enough to interrupt: batch 1, many epochs, on one toy case.
fn slow_run_args<'a>(out: &'a str, methods: &'a str, lr: &'a str) -> Vec<&'a str> {
    vec![
        "defend",
        "--cases",
        "badnet",
        "--methods",
        methods,
        "--epochs",
        "150",
        "--shots",
        "2",
        "--batch-size",
        "1",
        "--prompt-length",
        "4",
        "--augment",
        "none",
        "--lr",
        lr,
        "--out",
        out,
    ]
}

fn spawn(args: &[&str]) -> std::process::Child {
    common::rvpt_command()
        .env("RAYON_NUM_THREADS", "1")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Epochs recorded in a prompt checkpoint (None while it does not exist yet).
fn checkpoint_epochs(path: &std::path::Path) -> Option<usize> {
    rvpt::train::rvpt::PromptCheckpoint::load(path, &candle_core::Device::Cpu)
        .ok()
        .map(|c| c.meta.epoch)
}

/// Waits until the checkpoint holds at least `epochs` epochs, then kills the run (SIGKILL).
fn kill_after_epochs(child: &mut std::process::Child, ckpt: &std::path::Path, epochs: usize) {
    let start = std::time::Instant::now();
    while checkpoint_epochs(ckpt).is_none_or(|e| e < epochs) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be interrupted"
        );
        assert!(start.elapsed().as_secs() < 300, "no checkpoint after 300 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn report_of(out: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

/// `kill -9` mid-training, then the same command: the finished baseline is kept as it was (not
/// measured again) and the training continues from its checkpoint to the end.
#[test]
fn an_interrupted_defend_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = slow_run_args(out.to_str().unwrap(), "none,rvpt", "0.002");
    let ckpt = out.join("prompts-badnet-rvpt.safetensors");
    let mut child = spawn(&args);
    kill_after_epochs(&mut child, &ckpt, 3);
    let killed_at = checkpoint_epochs(&ckpt).unwrap();
    assert!(killed_at < 150);
    // The baseline finished before the kill: it is in the report, and so are the plots.
    let before = report_of(&out);
    let results = before["cases"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["method"], "none");
    assert!(out.join("asr.png").is_file() && out.join("ca.png").is_file());
    let logs_before = rvpt::train::rvpt::PromptCheckpoint::load(&ckpt, &candle_core::Device::Cpu)
        .unwrap()
        .meta
        .metrics;

    let o = rvpt(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("at epoch {killed_at} of 150")),
        "{err}"
    );
    let after = report_of(&out);
    let results = after["cases"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    // Kept to the byte: the same train_seconds, the same rates.
    assert_eq!(results[0], before["cases"][0]["results"][0]);
    let epochs = results[1]["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 150);
    for (e, (a, b)) in epochs
        .iter()
        .zip(logs_before.as_array().unwrap())
        .enumerate()
    {
        assert_eq!(a["loss"], b["loss"], "epoch {e} was trained again");
    }
}

/// A second run into an `--out` in use is refused (the first keeps running), and a prompt
/// checkpoint of other settings is not resumed: both say why.
#[test]
fn a_busy_out_and_a_checkpoint_of_other_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    let ckpt = out.join("prompts-badnet-rvpt.safetensors");
    let mut first = spawn(&slow_run_args(out_s, "rvpt", "0.002"));
    let lock = out.join(".rvpt.lock");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&lock).map_or(true, |s| s.trim().is_empty()) {
        assert!(start.elapsed().as_secs() < 120, "no lock file");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = rvpt(&slow_run_args(out_s, "rvpt", "0.002"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("in use by another rvpt run (pid {})", first.id())),
        "{err}"
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run was disturbed"
    );
    kill_after_epochs(&mut first, &ckpt, 2);
    // No report yet (no method finished); the checkpoint says it was made with lr 0.002.
    assert!(!out.join("report.json").exists());
    let o = rvpt(&slow_run_args(out_s, "rvpt", "0.01"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("lr: 0.002 → 0.01") && err.contains("--restart"),
        "{err}"
    );
}

/// A finished run's report is resumed only with the same settings: another --lr is refused
/// naming it, and --restart starts over.
#[test]
fn other_settings_on_a_finished_out_are_refused_until_restart() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    let quick = |lr: &'static str, restart: bool| {
        let mut a = vec![
            "defend",
            "--cases",
            "badnet",
            "--methods",
            "none,vpt",
            "--epochs",
            "2",
            "--shots",
            "2",
            "--prompt-length",
            "2",
            "--augment",
            "none",
            "--lr",
            lr,
            "--out",
            out_s,
        ];
        if restart {
            a.push("--restart");
        }
        rvpt(&a)
    };
    let o = quick("0.002", false);
    assert!(o.status.success());
    // Off a terminal (stderr is a pipe here) the job says what it does, a line per epoch.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("evaluating: 1000 images") && err.contains("training: epoch 2/2, loss"),
        "{err}"
    );
    let first = report_of(&out);
    // The same command again: nothing to do, nothing changes but the date.
    assert!(quick("0.002", false).status.success());
    assert_eq!(report_of(&out)["cases"], first["cases"]);
    let o = quick("0.01", false);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    // Each result is tied to its method's resolved configuration: the difference is named.
    assert!(
        err.contains("`vpt` result was made with other settings")
            && err.contains("prompts.lr: 0.002 → 0.01"),
        "{err}"
    );
    assert_eq!(report_of(&out)["cases"], first["cases"]);
    assert!(quick("0.01", true).status.success());
    assert_eq!(report_of(&out)["settings"]["lr"], 0.01);
    let vpt = &report_of(&out)["cases"][0]["results"][1];
    assert_eq!(vpt["config"]["prompts"]["lr"], 0.01);
    assert_eq!(vpt["key"].as_str().unwrap().len(), 64);
    // Provenance: which rvpt, when, on what.
    let p = &report_of(&out)["provenance"];
    assert_eq!(p["rvpt_version"], env!("CARGO_PKG_VERSION"));
    assert!(!p["rvpt_commit"].as_str().unwrap().is_empty());
    assert!(p["date"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        (p["device"].as_str(), p["dtype"].as_str()),
        (Some("cpu"), Some("f32"))
    );
    let w = &report_of(&out)["cases"][0]["weights"];
    assert_eq!(w["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(w["config_source"], "given");
    assert_eq!(w["config"]["vision_config"]["num_attention_heads"], 4);
}

/// Bad settings are refused before any work, naming the flag, and leave no --out behind.
#[test]
fn bad_settings_are_refused_up_front_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    for (flag, value, says) in [
        ("--epochs", "0", "--epochs 0: must be at least 1"),
        ("--batch-size", "0", "--batch-size 0: must be at least 1"),
        ("--shots", "0", "--shots 0: must be at least 1"),
        ("--lambda", "-1", "--lambda"),
        ("--lr", "0", "--lr 0: must be a finite number above 0"),
        ("--prompt-blocks", "13", "--prompt-blocks 13"),
        ("--perturb", "noise:x", "--perturb"),
        (
            "--crop-scale",
            "0",
            "--crop-scale 0: must be above 0 and at most 1",
        ),
        (
            "--crop-scale",
            "1.5",
            "--crop-scale 1.5: must be above 0 and at most 1",
        ),
    ] {
        let o = rvpt(&["defend", "--cases", "badnet", flag, value, "--out", out_s]);
        assert!(!o.status.success(), "{flag} {value} accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{flag} {value}: {err}");
        assert!(!out.exists(), "{flag} {value} created --out");
    }
    // Crops are CoOp's augmentation: without it, --crop-scale has nothing to set.
    let o = rvpt(&[
        "defend",
        "--cases",
        "badnet",
        "--augment",
        "none",
        "--crop-scale",
        "0.5",
        "--out",
        out_s,
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--crop-scale 0.5: only with CoOp's augmentation"),
        "{err}"
    );
    assert!(!out.exists());
    // A training image that does not decode is named before anything runs.
    let data = dir.path().join("data");
    assert!(
        rvpt(&["toy", "--out", data.to_str().unwrap(), "--per-class", "2"])
            .status
            .success()
    );
    let class_dir = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    for f in std::fs::read_dir(&class_dir).unwrap() {
        std::fs::write(f.unwrap().path(), b"not an image").unwrap();
    }
    let d = data.to_str().unwrap();
    let o = rvpt(&[
        "defend",
        "--weights",
        "toy2-badnet",
        "--data",
        d,
        "--test-data",
        d,
        "--trigger",
        "badnet:fixed,size=4",
        "--target",
        "heart",
        "--shots",
        "2",
        "--out",
        out_s,
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(class_dir.to_str().unwrap()), "{err}");
    assert!(!out.exists());
}

/// Mixed precision: the same short defence in bf16 (frozen weights and activations in bf16,
/// prompts and optimizer state in f32) follows the f32 run. Measured on 1,000 test images over 5
/// epochs the curves agreed to 0.15% and CA/ASR to 0.4 points; the tolerances here are wider for
/// the 200-image set (one image is half a point).
#[test]
fn bf16_training_follows_f32() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = (dir.path().join("train"), dir.path().join("test"));
    for (folder, split, n) in [(&train, "train", "8"), (&test, "test", "40")] {
        let o = rvpt(&[
            "toy",
            "--out",
            folder.to_str().unwrap(),
            "--split",
            split,
            "--per-class",
            n,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let run = |dtype: &str| -> serde_json::Value {
        let out = dir.path().join(dtype);
        let o = rvpt(&[
            "defend",
            "--weights",
            "toy2-badnet",
            "--data",
            train.to_str().unwrap(),
            "--test-data",
            test.to_str().unwrap(),
            "--trigger",
            "badnet:fixed,size=4",
            "--target",
            "heart",
            "--methods",
            "none,rvpt",
            "--epochs",
            "3",
            "--shots",
            "8",
            "--augment",
            "none",
            "--perturb",
            "noise:0.03",
            "--dtype",
            dtype,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (full, half) = (run("f32"), run("bf16"));
    assert_eq!(half["settings"]["dtype"], "bf16");
    let rvpt_result = |r: &serde_json::Value| -> serde_json::Value {
        r["cases"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["method"] == "rvpt")
            .unwrap()
            .clone()
    };
    let (a, b) = (rvpt_result(&full), rvpt_result(&half));
    let losses = |m: &serde_json::Value| -> Vec<f64> {
        m["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["loss"].as_f64().unwrap())
            .collect()
    };
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.len(), 3);
    for (x, y) in la.iter().zip(&lb) {
        assert!(
            (x - y).abs() <= 0.01 * x.abs(),
            "loss f32 {la:?} vs bf16 {lb:?}"
        );
    }
    // The loss fell in both: the prompts trained.
    assert!(la[2] < la[0] && lb[2] < lb[0], "{la:?} {lb:?}");
    for key in ["clean_accuracy", "attack_success_rate"] {
        let (x, y) = (
            a[key]["value"].as_f64().unwrap(),
            b[key]["value"].as_f64().unwrap(),
        );
        assert!((x - y).abs() <= 0.03, "{key}: f32 {x} vs bf16 {y}");
    }
    // The prompts, the master copy, were trained and saved in f32.
    let bytes = std::fs::read(b["prompts_file"].as_str().unwrap()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        st.tensor("prompt.0").unwrap().dtype(),
        safetensors::Dtype::F32
    );
}

/// A backdoor bound to one sentence (toy3-wanet: planted with the caption "a photo of a heart.",
/// which is also the CE template) must show in a report: its ASR under the phrasings neither
/// the poisoning nor the tuning used falls away.
#[test]
fn a_caption_string_backdoor_shows_under_other_templates() {
    let dir = tempfile::tempdir().unwrap();
    let o = rvpt(&[
        "defend",
        "--cases",
        "wanet-toy3",
        "--methods",
        "none",
        "--perturb",
        "flip",
        "--out",
        dir.path().join("out").to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = &report["cases"][0]["results"][0];
    let asr = |v: &serde_json::Value| v["attack_success_rate"]["value"].as_f64().unwrap();
    let others = row["by_template"].as_array().unwrap();
    let names: Vec<&str> = others
        .iter()
        .map(|t| t["template"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["a {} in the picture", "A photo of a {} in the middle."]
    );
    println!(
        "ASR under the CE template {:.3}, others {:?}",
        asr(row),
        others.iter().map(asr).collect::<Vec<_>>()
    );
    assert!(asr(row) > 0.8, "{}", asr(row));
    for t in others {
        assert!(asr(t) < 0.3, "{}: {}", t["template"], asr(t));
    }
}
