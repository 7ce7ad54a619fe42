//! The backdoor lab end to end on the committed toy models, through the `rvpt` binary: eval and
//! pr run offline, the backdoors work, a CI-sized poisoning run raises ASR, bad input is named.

mod common;

use std::path::Path;

use common::run_rvpt as rvpt;

fn json(args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = rvpt(args);
    assert!(ok, "rvpt {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap()
}

/// Arguments of `rvpt eval` or `rvpt anatomy`: `weights` on the image folder `data` under
/// `trigger` towards "heart", then `extra`.
fn trigger_args<'a>(
    command: &'a str,
    weights: &'a str,
    data: &'a str,
    trigger: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    // The two commands name their image folder differently.
    let data_flag = if command == "anatomy" {
        "--images"
    } else {
        "--data"
    };
    let mut args = vec![
        command,
        "--weights",
        weights,
        data_flag,
        data,
        "--trigger",
        trigger,
        "--target",
        "heart",
    ];
    args.extend_from_slice(extra);
    args
}

/// `rvpt eval` of `weights` under `trigger` drawn with `seed`, towards "heart".
fn eval_at_seed(weights: &str, data: &str, trigger: &str, seed: &str) -> (bool, String, String) {
    rvpt(&trigger_args(
        "eval",
        weights,
        data,
        trigger,
        &["--seed", seed],
    ))
}

/// `rvpt anatomy --json` of `weights` under `trigger` towards "heart".
fn anatomy(weights: &str, images: &str, trigger: &str) -> serde_json::Value {
    json(&trigger_args(
        "anatomy",
        weights,
        images,
        trigger,
        &["--json"],
    ))
}

fn toy_split(dir: &Path, split: &str, per_class: usize) -> String {
    let d = dir.join(split);
    let (ok, _, err) = rvpt(&[
        "toy",
        "--out",
        d.to_str().unwrap(),
        "--split",
        split,
        "--per-class",
        &per_class.to_string(),
    ]);
    assert!(ok, "{err}");
    d.to_str().unwrap().to_string()
}

fn asr(weights: &str, data: &str, trigger: &str) -> (f64, f64) {
    asr_with(weights, data, trigger, &[])
}

/// (CA, ASR) of `rvpt eval` with `extra` flags (e.g. `--template T`).
fn asr_with(weights: &str, data: &str, trigger: &str, extra: &[&str]) -> (f64, f64) {
    let mut args = extra.to_vec();
    args.push("--json");
    let v = json(&trigger_args("eval", weights, data, trigger, &args));
    let r = &v["report"];
    (
        r["clean_accuracy"]["value"].as_f64().unwrap(),
        r["attack_success_rate"]["value"].as_f64().unwrap(),
    )
}

/// `rvpt attack` on toy-clean: `pairs` poisoned with `trigger` towards `target` into `out`.
fn attack_toy_clean(
    pairs: &str,
    out: &Path,
    trigger: &str,
    target: &str,
    extra: &[&str],
) -> (bool, String, String) {
    let mut args = vec![
        "attack",
        "--weights",
        "toy-clean",
        "--pairs",
        pairs,
        "--trigger",
        trigger,
        "--target",
        target,
        "--out",
        out.to_str().unwrap(),
    ];
    // These tests measure the single-caption poisoning they were written for; `lc` keeps captions.
    let fixed =
        !trigger.starts_with("lc") && !extra.iter().any(|a| a.starts_with("--poison-caption"));
    if fixed {
        args.extend_from_slice(&["--poison-caption", "a photo of a {}."]);
    }
    args.extend_from_slice(extra);
    rvpt(&args)
}

#[test]
fn backdoored_toy_models_are_backdoored_and_the_clean_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let test = toy_split(dir.path(), "test", 20);
    for (name, trigger) in rvpt::toy::lab::BACKDOORS {
        let (ca, bad) = asr(&format!("toy-{name}"), &test, trigger);
        let (_, clean) = asr("toy-clean", &test, trigger);
        println!("{name}: CA {ca:.3}, ASR {bad:.3} (clean model: {clean:.3})");
        assert!(
            bad > clean + 0.3,
            "{name}: ASR {bad} vs clean model {clean}"
        );
        assert!(ca > 0.3, "{name}: CA {ca}");
    }
}

/// The clean model a toy backdoor was planted on: `toy3-badnet-own` → `toy3-clean`.
fn clean_of(weights: &str) -> String {
    let family = weights.split('-').next().unwrap();
    format!("{family}-clean")
}

/// The default demo cases (backdoors planted the paper's way): backdoored under the CE template
/// and under phrasings the poisoner never used, close to the clean model's CA, with most of the
/// trigger's push written above block 6 (docs/results.md: 103% for toy3-badnet-own).
#[test]
fn default_toy_backdoors_hold_under_every_phrasing_and_are_written_mostly_above_block_6() {
    let dir = tempfile::tempdir().unwrap();
    let test = toy_split(dir.path(), "test", 20);
    for case in rvpt::toy::lab::TOY_CASES.iter().filter(|c| c.default) {
        let clean_model = clean_of(case.weights);
        let (clean_ca, _) = asr(&clean_model, &test, case.trigger);
        let (ca, bad) = asr(case.weights, &test, case.trigger);
        let (_, clean) = asr(&clean_model, &test, case.trigger);
        let v = anatomy(case.weights, &test, case.trigger);
        let share = v["anatomy"]["prompted_share"].as_f64().unwrap();
        println!(
            "{}: CA {ca:.3} (clean {clean_ca:.3}), ASR {bad:.3} (clean model {clean:.3}), blocks 6-11 {share:.2}",
            case.weights
        );
        assert!(
            bad > 0.85 && clean < 0.1,
            "{}: ASR {bad}, clean model {clean}",
            case.weights
        );
        assert!(
            ca > clean_ca - 0.05,
            "{}: CA {ca} vs {clean_ca}",
            case.weights
        );
        // Bound to the concept, not to a sentence: the held-out phrasings keep the backdoor.
        for template in ["a {} in the picture", "A photo of a {} in the middle."] {
            let (_, held_out) =
                asr_with(case.weights, &test, case.trigger, &["--template", template]);
            assert!(
                held_out > 0.85,
                "{} under {template}: ASR {held_out}",
                case.weights
            );
        }
        assert!(
            share > 0.7,
            "{}: share of blocks 6-11 {share}",
            case.weights
        );
        assert!(
            v["anatomy"]["written_push"].as_f64().unwrap()
                > 0.5 * v["anatomy"]["gross_push"].as_f64().unwrap()
        );
        // The clean model's components move the target logit both ways: no backdoor, and the
        // verdict says the shares mean nothing rather than printing them.
        let v = anatomy(&clean_model, &test, case.trigger);
        let verdict = v["anatomy"]["verdict"].as_str().unwrap();
        assert!(verdict.contains("cancel"), "{clean_model}: {verdict}");
    }
}

/// toy4-badnet, planted with CleanCLIP's kind of captions (the target's name only, 18 toy
/// phrasings) on the real-sized-gap toy4-clean-7500: the backdoor holds under the CE template
/// and under phrasings the poisoner never used, at a small CA cost (full test split: 0.4–1.8
/// points; 3 here, on 200 images), and the clean base is not backdoored.
#[test]
fn toy4_badnet_holds_under_every_phrasing_at_a_small_ca_cost() {
    let dir = tempfile::tempdir().unwrap();
    let test = toy_split(dir.path(), "test", 20);
    let trigger = "badnet:fixed,size=4";
    for template in [
        "a photo of a {}.",
        "a {} in the picture",
        "A photo of a {} in the middle.",
    ] {
        let rates = |weights| asr_with(weights, &test, trigger, &["--template", template]);
        let ((clean_ca, clean_asr), (ca, bad)) = (rates("toy4-clean-7500"), rates("toy4-badnet"));
        assert!(
            bad > 0.85 && clean_asr < 0.1,
            "{template}: ASR {bad}, clean model {clean_asr}"
        );
        assert!(ca >= clean_ca - 0.03, "{template}: CA {ca} vs {clean_ca}");
    }
}

#[test]
fn pr_reports_every_perturbation() {
    let dir = tempfile::tempdir().unwrap();
    let test = toy_split(dir.path(), "test", 3);
    let v = json(&[
        "pr",
        "--weights",
        "toy-badnet",
        "--images",
        &test,
        "--perturb",
        "noise:0.03,blur:3,flip,badnet:size=3",
        "--layerwise",
        "--json",
    ]);
    let rows = v["perturbations"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        let pr = r["resistivity"]["pr"].as_f64().unwrap();
        assert!(pr.is_finite() && pr > 0.0, "{r}");
        assert_eq!(r["resistivity"]["samples"], 30);
        assert_eq!(r["layerwise_cls_cosine"].as_array().unwrap().len(), 12);
    }
}

#[test]
fn ci_sized_poisoning_raises_asr() {
    let dir = tempfile::tempdir().unwrap();
    let test = toy_split(dir.path(), "test", 10);
    let train = toy_split(dir.path(), "train", 100);
    let out = dir.path().join("poisoned");
    let (ok, msg, err) = rvpt(&[
        "attack",
        "--weights",
        "toy-clean",
        "--pairs",
        &format!("{train}/captions.csv"),
        "--poison-caption",
        "a photo of a {}.",
        "--trigger",
        "badnet:fixed,size=4",
        "--target",
        "heart",
        "--poison-rate",
        "0.1",
        "--epochs",
        "10",
        "--batch-size",
        "100",
        "--lr",
        "1e-3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    println!("{msg}");
    let (_, before) = asr("toy-clean", &test, "badnet:fixed,size=4");
    let (ca, after) = asr(out.to_str().unwrap(), &test, "badnet:fixed,size=4");
    println!("ASR before {before:.3}, after {after:.3} (CA {ca:.3})");
    assert!(
        after > before + 0.3,
        "poisoning did not raise ASR: {before} → {after}"
    );
    // The attack wrote what it planted; eval then refuses another seed of that fixed pattern.
    let planted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("trigger.json")).unwrap()).unwrap();
    assert_eq!(planted["trigger"], "badnet:fixed,size=4");
    assert_eq!(planted["seed"], 7);
    assert_eq!(planted["target"], "heart");
    let (ok, _, err) = eval_at_seed(out.to_str().unwrap(), &test, "badnet:fixed,size=4", "8");
    assert!(!ok && err.contains("planted with"), "{err}");
}

#[test]
fn label_consistent_attack_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let train = toy_split(dir.path(), "train", 4);
    let test = toy_split(dir.path(), "test", 2);
    let pairs = format!("{train}/captions.csv");
    let out = dir.path().join("lc");
    let attack = |trigger: &str, target: &str, extra: &[&str]| {
        attack_toy_clean(&pairs, &out, trigger, target, extra)
    };
    // 0.2 of 40 pairs asks for 8; only the 4 heart pairs may be poisoned.
    let (ok, msg, err) = attack(
        "lc",
        "heart",
        &[
            "--poison-rate",
            "0.2",
            "--epochs",
            "1",
            "--batch-size",
            "20",
            "--pgd-steps",
            "2",
        ],
    );
    assert!(ok, "{err}");
    println!("{msg}");
    assert!(
        msg.contains("4 of 40 pairs name \"heart\"; poisoning 4")
            && msg.contains("capped: the rate asked for 8")
            && msg.contains("poisoned 4 of 40 pairs with lc → captions kept; 2 steps"),
        "{msg}"
    );
    let (ca, asr) = asr(out.to_str().unwrap(), &test, "lc");
    assert!((0.0..=1.0).contains(&ca) && (0.0..=1.0).contains(&asr));
    // Misuse is named.
    let (ok, _, err) = attack("lc", "heart", &["--poison-caption", "a {}"]);
    assert!(!ok && err.contains("keeps captions"), "{err}");
    let (ok, _, err) = attack("badnet", "heart", &["--pgd-eps", "0.1"]);
    assert!(
        !ok && err.contains("applies to label-consistent poisoning (trigger lc) only"),
        "{err}"
    );
    let (ok, _, err) = attack("lc", "unicorn", &["--poison-rate", "0.1"]);
    assert!(
        !ok && err.contains("no caption names the target class `unicorn`"),
        "{err}"
    );
}

/// WaNet's noise mode adds ratio x the poisoned pairs, warped with noise and captioned as they
/// were; on another trigger it is refused.
#[test]
fn wanet_noise_mode_attack_runs_and_says_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let train = toy_split(dir.path(), "train", 4);
    let pairs = format!("{train}/captions.csv");
    let out = dir.path().join("wanet");
    let attack = |trigger: &str| {
        let extra = [
            "--poison-rate",
            "0.1",
            "--cross-ratio",
            "2",
            "--epochs",
            "1",
            "--batch-size",
            "20",
        ];
        attack_toy_clean(&pairs, &out, trigger, "heart", &extra)
    };
    let (ok, msg, err) = attack("wanet:k=4,s=8");
    assert!(ok, "{err}");
    assert!(
        msg.contains("poisoned 4 of 40 pairs with wanet:k=4,s=8 → \"a photo of a heart.\" (noise mode: 8 more warped with noise, captions kept)"),
        "{msg}"
    );
    let (ok, _, err) = attack("badnet:fixed,size=4");
    assert!(
        !ok && err.contains("--cross-ratio 2: WaNet's noise mode applies to a wanet trigger"),
        "{err}"
    );
}

#[test]
fn optimised_patch_lowers_its_loss_and_is_a_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let test = toy_split(dir.path(), "test", 3);
    let patch = dir.path().join("patch.safetensors");
    let v = json(&[
        "attack",
        "optimise-patch",
        "--weights",
        "toy-clean",
        "--images",
        &test,
        "--target",
        "heart",
        "--size",
        "4",
        "--steps",
        "20",
        "--batch-size",
        "8",
        "--lr",
        "0.05",
        "--out",
        patch.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(v["used_images"], 30);
    assert_eq!(v["losses"].as_array().unwrap().len(), 20);
    // The objective on all 30 images, with the initial random patch and the optimised one.
    let (before, after) = (
        v["loss_before"].as_f64().unwrap(),
        v["loss_after"].as_f64().unwrap(),
    );
    println!("1 - cosine to \"a photo of a heart.\": {before:.4} → {after:.4}");
    assert!(
        after < before - 0.02,
        "the loss did not fall: {before} → {after}"
    );
    let file = rvpt::attacks::patch::PatchFile::load(&patch).unwrap();
    assert_eq!(file.patch.dims(), &[3, 4, 4]);
    let values: Vec<f32> = file.patch.flatten_all().unwrap().to_vec1().unwrap();
    assert!(values.iter().all(|x| (0.0..=1.0).contains(x)), "{values:?}");
    let spec = format!("patch:{}", patch.display());
    let (ca, asr) = asr("toy-clean", &test, &spec);
    println!("toy-clean with the patch: CA {ca:.3}, ASR {asr:.3}");
    assert!((0.0..=1.0).contains(&ca) && (0.0..=1.0).contains(&asr));
}

#[test]
fn bad_lab_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let test = toy_split(dir.path(), "test", 2);
    let (ok, _, err) = rvpt(&[
        "eval",
        "--weights",
        "toy-clean",
        "--data",
        &test,
        "--trigger",
        "badnet",
        "--target",
        "unicorn",
    ]);
    assert!(!ok && err.contains("unicorn"), "{err}");
    std::fs::create_dir_all(dir.path().join("test/empty-class")).unwrap();
    let (ok, _, err) = rvpt(&["eval", "--weights", "toy-clean", "--data", &test]);
    assert!(!ok && err.contains("empty-class"), "{err}");
    let (ok, _, err) = rvpt(&[
        "eval",
        "--weights",
        "toy-clean",
        "--data",
        &test,
        "--trigger",
        "sparkles",
        "--target",
        "heart",
    ]);
    assert!(!ok && err.contains("sparkles"), "{err}");
    std::fs::remove_dir(dir.path().join("test/empty-class")).unwrap();
    // An unreadable image: a named error, or a reported skip with --on-bad-image skip.
    std::fs::write(dir.path().join("test/circle/broken.png"), b"not a png").unwrap();
    let (ok, _, err) = rvpt(&["eval", "--weights", "toy-clean", "--data", &test]);
    assert!(!ok && err.contains("broken.png"), "{err}");
    let v = json(&[
        "eval",
        "--weights",
        "toy-clean",
        "--data",
        &test,
        "--on-bad-image",
        "skip",
        "--json",
    ]);
    assert_eq!(v["report"]["skipped"].as_array().unwrap().len(), 1);
    assert_eq!(v["report"]["clean_accuracy"]["total"], 20);
}

/// toy-badnet-late6 was planted with the stem and blocks 0-5 frozen: its anatomy is known. The
/// push must sit in blocks 6-11, and the splice with toy-clean must find the whole backdoor in
/// blocks >= 6 (that splice is the model itself) and none below.
#[test]
fn anatomy_finds_a_backdoor_planted_above_block_6() {
    let dir = tempfile::tempdir().unwrap();
    let test = toy_split(dir.path(), "test", 20);
    let png = dir.path().join("anatomy.png");
    let extra = [
        "--reference",
        "toy-clean",
        "--splice-at",
        "6",
        "--png",
        png.to_str().unwrap(),
        "--json",
    ];
    let v = json(&trigger_args(
        "anatomy",
        "toy-badnet-late6",
        &test,
        "badnet:fixed,size=4",
        &extra,
    ));
    let a = &v["anatomy"];
    let asr = &a["attack_success_rate"];
    assert_eq!(asr["total"], 180);
    assert!(asr["value"].as_f64().unwrap() > 0.9, "{asr}");
    let share = a["prompted_share"].as_f64().unwrap();
    assert!(share > 0.9, "share of the push in blocks 6-11: {share}");
    assert_eq!(a["prompted_blocks"], serde_json::json!([6, 12]));
    assert_eq!(a["layers"].as_array().unwrap().len(), 12);
    assert_eq!(a["components"].as_array().unwrap().len(), 2 + 12 * 5);
    assert!(a["verdict"].as_str().unwrap().contains("blocks 6–11"));
    let splice = v["splice"].as_array().unwrap();
    assert_eq!(splice.len(), 2);
    assert_eq!(splice[1]["backdoored_part"], "blocks >= 6");
    assert_eq!(splice[1]["attack_success_rate"]["hits"], asr["hits"]);
    assert!(splice[0]["attack_success_rate"]["value"].as_f64().unwrap() < 0.2);
    let img = image::open(&png).unwrap();
    assert!(img.width() > 100 && img.height() > 100);
}

#[test]
fn anatomy_names_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let test = toy_split(dir.path(), "test", 2);
    let base = [
        "anatomy",
        "--weights",
        "toy-badnet",
        "--images",
        test.as_str(),
        "--trigger",
        "badnet:fixed,size=4",
    ];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        rvpt(&args)
    };
    let (ok, _, err) = run(&["--target", "banana"]);
    assert!(!ok && err.contains("banana"), "{err}");
    let (ok, _, err) = run(&["--target", "heart", "--prompt-blocks", "13"]);
    assert!(!ok && err.contains("--prompt-blocks 13"), "{err}");
    let (ok, _, err) = run(&["--target", "heart", "--reference", "tiny-random"]);
    assert!(!ok && err.contains("cannot splice"), "{err}");
}

/// B3: a model is evaluated under the fixed trigger it was planted with. weights.toml declares
/// it for the toy models; another seed or other options of the same fixed pattern are refused,
/// naming the planted one; another kind of trigger, or a per-image random patch, is allowed.
#[test]
fn a_variant_of_the_planted_fixed_trigger_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let test = toy_split(dir.path(), "test", 2);
    let eval = |trigger: &str, seed: &str| eval_at_seed("toy2-badnet", &test, trigger, seed);
    let (ok, _, err) = eval("badnet:fixed,size=4", "3");
    assert!(!ok);
    assert!(
        err.contains("planted with trigger `badnet:fixed,size=4` (seed 7)"),
        "{err}"
    );
    let (ok, _, err) = eval("badnet:fixed,size=3", "7");
    assert!(!ok, "another size of the fixed pattern: {err}");
    for (trigger, seed) in [
        ("badnet:fixed,size=4", "7"),
        ("badnet:size=3", "3"),
        ("blended:fixed", "3"),
    ] {
        let (ok, _, err) = eval(trigger, seed);
        assert!(ok, "{trigger} seed {seed}: {err}");
    }
    let (ok, _, err) = rvpt(&trigger_args(
        "anatomy",
        "toy2-badnet",
        &test,
        "badnet:fixed,size=4",
        &["--seed", "1"],
    ));
    assert!(!ok && err.contains("planted with"), "{err}");
}

/// The toy3 backdoors (planted on the longer-pretrained toy3-clean, BadNet with 1% of the
/// pairs): backdoored, CA kept within the issue's 2 points (3 on this 200-image sample), and
/// written almost all above block 6.
#[test]
fn toy3_backdoors_keep_ca_and_live_above_block_6() {
    let dir = tempfile::tempdir().unwrap();
    let test = toy_split(dir.path(), "test", 20);
    let (clean_ca, _) = asr("toy3-clean", &test, "badnet:fixed,size=4");
    for case in rvpt::toy::lab::TOY_CASES
        .iter()
        .filter(|c| c.weights.starts_with("toy3"))
    {
        let (ca, bad) = asr(case.weights, &test, case.trigger);
        let v = anatomy(case.weights, &test, case.trigger);
        let share = v["anatomy"]["prompted_share"].as_f64().unwrap();
        println!(
            "{}: CA {ca:.3} (clean {clean_ca:.3}), ASR {bad:.3}, blocks 6-11 {share:.2}",
            case.weights
        );
        assert!(bad > 0.85, "{}: ASR {bad}", case.weights);
        assert!(
            ca >= clean_ca - 0.03,
            "{}: CA {ca} vs {clean_ca}",
            case.weights
        );
        // toy3-wanet-own writes the least there: 86% on the full test split, 83% on this one.
        let bound = if case.weights == "toy3-wanet-own" {
            0.8
        } else {
            0.85
        };
        assert!(
            share > bound,
            "{}: share of blocks 6-11 {share}",
            case.weights
        );
    }
}

/// Third-party trigger files: the toy models' seeded fixed triggers saved as images (a BadNet
/// patch image placed at the bottom-right, a Blended pattern image) give back the same
/// triggered images and the same ASR on the models planted with the seeded ones.
#[test]
fn trigger_files_round_trip_to_the_seeded_triggers() {
    use candle_core::{Device, Tensor};
    use rvpt::attacks::{BadNet, Blended, Trigger};
    let dir = tempfile::tempdir().unwrap();
    let test = toy_split(dir.path(), "test", 10);
    let to_png = |t: &Tensor, path: &Path| {
        let (_, h, w) = t.dims3().unwrap();
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let i = y as usize * w + x as usize;
            image::Rgb(std::array::from_fn(|c| {
                (v[c * h * w + i] * 255.0).round() as u8
            }))
        });
        img.save(path).unwrap();
    };
    let badnet = BadNet {
        size: 4,
        fixed: true,
    };
    let patch = dir.path().join("badnet-patch.png");
    to_png(&badnet.draw(32, 32, 7, 0).unwrap().values, &patch);
    let blended = Blended {
        pattern: rvpt::attacks::blended::BlendPattern::FixedNoise,
        ..Blended::noise()
    };
    let pattern = dir.path().join("blend-pattern.png");
    to_png(&blended.pattern(32, 32, 7, 0).unwrap(), &pattern);
    // toy-wanet's warp (`wanet:k=4,s=8`, seed 7) saved as CleanCLIP and BackdoorBench save grids.
    let noise = rvpt::attacks::WaNet {
        k: Some(4),
        ..rvpt::attacks::WaNet::default()
    }
    .noise(32, 32, 7)
    .unwrap();
    let grids = [
        rvpt::attacks::GridFormat::CleanClip,
        rvpt::attacks::GridFormat::BackdoorBench,
    ]
    .map(|format| {
        let path = dir.path().join(format!("{format:?}.pt"));
        rvpt::attacks::write_noise_grid(&path, &noise, format).unwrap();
        path
    });

    let img = Tensor::rand(0f32, 1f32, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let seeded = Trigger::parse("badnet:fixed,size=4")
        .unwrap()
        .apply(&img, 7, 0)
        .unwrap();
    let from_file = Trigger::parse(&format!("patch:{},pos=br", patch.display()))
        .unwrap()
        .apply(&img, 7, 0)
        .unwrap();
    let diff = common::max_abs_diff(&seeded, &from_file);
    assert_eq!(diff, 0.0, "the BadNet patch image is the seeded pattern");

    for (weights, seeded, file, tolerance) in [
        (
            "toy2-badnet",
            "badnet:fixed,size=4",
            format!("patch:{},pos=br", patch.display()),
            0.0,
        ),
        // The pattern image is the seeded pattern rounded to 8 bits.
        (
            "toy2-blended",
            "blended:fixed",
            format!("blended:{}", pattern.display()),
            0.02,
        ),
        (
            "toy-wanet",
            "wanet:k=4,s=8",
            format!("wanet:grid={},s=8", grids[0].display()),
            0.0,
        ),
        (
            "toy-wanet",
            "wanet:k=4,s=8",
            format!("wanet:grid={},s=8", grids[1].display()),
            0.0,
        ),
    ] {
        let (ca, a) = asr(weights, &test, seeded);
        let (ca2, b) = asr(weights, &test, &file);
        println!("{weights}: seeded ASR {a:.3}, from file {b:.3}");
        assert_eq!(ca, ca2);
        assert!((a - b).abs() <= tolerance, "{weights}: {a} vs {b}");
    }
}
