//! Triggers and PR perturbations (src/attacks/): every pure apply function against PyTorch /
//! torchvision on the parameters `tests/reference/make_attack_fixtures.py` drew, seeded
//! determinism of the draws, the spec parsers, the PGD step and the blended pattern file.
//! Measured errors: `cargo test --release --test attacks -- --nocapture`.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{load_tensors, max_abs_diff};
use rvpt::attacks::badnet::{mean_plus_noise, BadNetDraw};
use rvpt::attacks::label_consistent::{apply_corners, corner_pattern, pgd_step};
use rvpt::attacks::perturb::{
    add_noise, adjust_brightness, adjust_hue, default_sigma, draw_brightness, draw_hue, draw_noise,
    gaussian_blur, gaussian_kernel1d, hflip,
};
use rvpt::attacks::wanet::{grid_sample, upsample_bicubic, warp_grid};
use rvpt::attacks::{
    apply_patch, blended, BadNet, Blended, LabelConsistent, Perturbation, Placement, Trigger, WaNet,
};
use rvpt::Error;
use std::collections::HashMap;
use std::sync::OnceLock;

const TOL: f32 = 1e-5;
/// WaNet (bicubic + bilinear resampling) and hue (HSV round trip) sum in a different order.
const TOL_RESAMPLE: f32 = 1e-4;

fn fx() -> &'static HashMap<String, Tensor> {
    static FX: OnceLock<HashMap<String, Tensor>> = OnceLock::new();
    FX.get_or_init(|| load_tensors("attacks.safetensors"))
}

fn t(name: &str) -> Tensor {
    fx().get(name)
        .unwrap_or_else(|| panic!("fixture tensor `{name}` missing"))
        .clone()
}

fn scalar(name: &str) -> f32 {
    t(name).to_vec1::<f32>().unwrap()[0]
}

fn check(what: &str, ours: &Tensor, theirs: &Tensor, tol: f32) {
    let err = max_abs_diff(ours, theirs);
    println!("{what}: max abs error vs torch {err:.3e}");
    assert!(err <= tol, "{what}: max abs error {err} > {tol}");
}

fn vals(x: &Tensor) -> Vec<f32> {
    x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.dims() == b.dims() && vals(a) == vals(b)
}

/// The error message of an `Error::Invalid`, or a panic naming what came instead.
fn invalid<T: std::fmt::Debug>(r: rvpt::Result<T>) -> String {
    match r {
        Err(Error::Invalid(msg)) => msg,
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

// ---------------------------------------------------------------- golden: triggers

#[test]
fn badnet_patch_matches_cleanclip() {
    let x = t("x32");
    let locs = t("badnet_loc").to_vec2::<i64>().unwrap();
    let badnet = BadNet {
        size: 8,
        fixed: false,
    };
    for (i, loc) in locs.iter().enumerate() {
        let d = BadNetDraw {
            values: t("badnet_noise").get(i).unwrap(),
            row: loc[0] as usize,
            col: loc[1] as usize,
        };
        let ours = badnet.apply_drawn(&x.get(i).unwrap(), &d).unwrap();
        check(
            &format!("badnet image {i}"),
            &ours,
            &t("badnet_out").get(i).unwrap(),
            TOL,
        );
    }
    // The same through the public pieces, and the unclamped values CleanCLIP keeps.
    let x0 = x.get(0).unwrap();
    let patch = mean_plus_noise(&x0, &t("badnet_noise").get(0).unwrap()).unwrap();
    let v = vals(&patch);
    assert!(v.iter().any(|&p| !(0.0..=1.0).contains(&p)));
}

#[test]
fn centre_patch_matches_torch() {
    let ours = apply_patch(&t("x32"), &t("patch"), Placement::Centre).unwrap();
    check("patch (centre, batch)", &ours, &t("patch_out"), 0.0);
}

/// The optimised-patch loop needs gradients with respect to the patch through the paste.
#[test]
fn apply_patch_is_differentiable_in_the_patch() {
    let x = t("x32");
    let patch = candle_core::Var::from_tensor(&t("patch")).unwrap();
    let out = apply_patch(&x, patch.as_tensor(), Placement::Centre).unwrap();
    // A ramp weight makes every pixel's gradient distinct, so a misplaced patch shows.
    let ramp = Tensor::arange(0f32, x.elem_count() as f32, &Device::Cpu)
        .unwrap()
        .reshape(x.dims())
        .unwrap();
    let loss = (out * &ramp).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = grads
        .get(patch.as_tensor())
        .expect("no gradient for the patch");
    let want = ramp
        .narrow(2, 12, 7)
        .unwrap()
        .narrow(3, 12, 7)
        .unwrap()
        .sum(0)
        .unwrap();
    assert_eq!(max_abs_diff(g, &want), 0.0);
}

#[test]
fn blended_matches_cleanclip() {
    let ours = blended::blend(&t("x32"), &t("blended_pattern"), 0.2).unwrap();
    check("blended", &ours, &t("blended_out"), TOL);
}

#[test]
fn wanet_matches_torch_k4() {
    let grid = warp_grid(&t("wanet_k4_control"), 64, 64, scalar("wanet_k4_s")).unwrap();
    let ours = grid_sample(&t("x64"), &grid).unwrap();
    check(
        "wanet k=4 s=0.5, 64 px",
        &ours,
        &t("wanet_k4_out"),
        TOL_RESAMPLE,
    );
}

#[test]
fn wanet_matches_torch_k_equals_h() {
    let grid = warp_grid(&t("wanet_kh_control"), 32, 32, scalar("wanet_kh_s")).unwrap();
    let ours = grid_sample(&t("x32"), &grid).unwrap();
    check(
        "wanet k=H=32 s=1, 32 px",
        &ours,
        &t("wanet_kh_out"),
        TOL_RESAMPLE,
    );
    // Single image = that image of the batch.
    let one = grid_sample(&t("x32").get(1).unwrap(), &grid).unwrap();
    assert!(same(&one, &ours.get(1).unwrap()));
}

#[test]
fn label_consistent_corners_match_torch() {
    let amp = scalar("lc_amp");
    let cell = t("lc_cell").to_vec1::<i64>().unwrap()[0] as usize;
    let ours = apply_corners(&t("x32"), amp, cell).unwrap();
    check("label-consistent corners", &ours, &t("lc_out"), TOL);
}

// ---------------------------------------------------------------- golden: perturbations

#[test]
fn noise_matches_torch() {
    let x0 = t("x32").get(0).unwrap();
    let ours = add_noise(&x0, &t("noise"), scalar("noise_std")).unwrap();
    check("noise 0.03", &ours, &t("noise_out"), TOL);
}

#[test]
fn blur_matches_torchvision() {
    check(
        "blur 3 (32 px batch)",
        &gaussian_blur(&t("x32"), 3).unwrap(),
        &t("blur3_out"),
        TOL,
    );
    check(
        "blur 5 (64 px)",
        &gaussian_blur(&t("x64"), 5).unwrap(),
        &t("blur5_out"),
        TOL,
    );
    // torchvision's sigma formula, and a normalised symmetric kernel.
    assert!((default_sigma(3) - 0.8).abs() < 1e-12 && (default_sigma(5) - 1.1).abs() < 1e-12);
    let k = gaussian_kernel1d(5, default_sigma(5));
    assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    assert_eq!(k[0], k[4]);
    assert!(k[2] > k[1] && k[1] > k[0]);
}

#[test]
fn brightness_matches_torchvision() {
    let x = t("x32");
    let f = t("brightness_factors").to_vec1::<f32>().unwrap();
    for (i, &fi) in f.iter().enumerate() {
        let ours = adjust_brightness(&x.get(i).unwrap(), fi).unwrap();
        check(
            &format!("brightness {fi}"),
            &ours,
            &t("brightness_out").get(i).unwrap(),
            TOL,
        );
    }
}

#[test]
fn hue_matches_torchvision() {
    let x = t("x32");
    let f = t("hue_factors").to_vec1::<f32>().unwrap();
    for (i, &fi) in f.iter().enumerate() {
        let ours = adjust_hue(&x.get(i).unwrap(), fi).unwrap();
        check(
            &format!("hue {fi}"),
            &ours,
            &t("hue_out").get(i).unwrap(),
            TOL_RESAMPLE,
        );
    }
    assert!(invalid(adjust_hue(&x, 0.6)).contains("0.6"));
}

#[test]
fn flip_matches_torchvision() {
    check(
        "flip (batch)",
        &hflip(&t("x32")).unwrap(),
        &t("flip_out"),
        0.0,
    );
    let one = hflip(&t("x32").get(0).unwrap()).unwrap();
    assert!(same(&one, &t("flip_out").get(0).unwrap()));
}

// ---------------------------------------------------------------- resampling properties

#[test]
fn bicubic_same_size_is_identity_and_constants_stay_constant() {
    let x = t("x32").get(0).unwrap();
    assert!(same(&upsample_bicubic(&x, 32, 32).unwrap(), &x));
    let c = Tensor::full(0.25f32, (2, 4, 4), &Device::Cpu).unwrap();
    let up = vals(&upsample_bicubic(&c, 37, 53).unwrap());
    assert_eq!(up.len(), 2 * 37 * 53);
    assert!(up.iter().all(|v| (v - 0.25).abs() < 1e-6));
}

#[test]
fn wanet_with_zero_strength_is_the_identity() {
    let x = t("x64");
    let w = WaNet {
        k: Some(4),
        s: 0.0,
        ..WaNet::default()
    };
    let ours = w.apply(&x, 3).unwrap();
    let err = max_abs_diff(&ours, &x);
    assert!(err < 1e-5, "identity warp moved pixels by {err}");
}

// ---------------------------------------------------------------- seeded draws

/// Same seed and index → identical; another seed → different; another index → different
/// (unless the transform is one per attack).
fn assert_seeded(name: &str, f: impl Fn(&Tensor, u64, u64) -> Tensor, per_image: bool) {
    let x = t("x32").get(1).unwrap();
    let a = f(&x, 7, 3);
    assert!(
        same(&a, &f(&x, 7, 3)),
        "{name}: same seed, different result"
    );
    assert!(!same(&a, &f(&x, 8, 3)), "{name}: another seed, same result");
    assert!(!same(&a, &x), "{name}: image unchanged");
    let other_index = f(&x, 7, 4);
    assert_eq!(
        !same(&a, &other_index),
        per_image,
        "{name}: index dependence"
    );
    // A batch draws image b with index + b.
    let batch = Tensor::stack(&[&x, &x], 0).unwrap();
    let fb = f(&batch, 7, 3);
    assert!(same(&fb.get(0).unwrap(), &a), "{name}: batch image 0");
    assert!(
        same(&fb.get(1).unwrap(), &other_index),
        "{name}: batch image 1"
    );
}

#[test]
fn triggers_are_seeded() {
    for (spec, per_image) in [
        ("badnet", true),
        ("badnet:size=8", true),
        ("blended", true),
        ("wanet", false),
        ("wanet:k=4,s=0.5", false),
    ] {
        let trig = Trigger::parse(spec).unwrap();
        assert_seeded(spec, |x, s, i| trig.apply(x, s, i).unwrap(), per_image);
    }
}

#[test]
fn perturbations_are_seeded() {
    for spec in ["noise:0.03", "brightness:0.5", "hue:0.3"] {
        let p = Perturbation::parse(spec).unwrap();
        assert_seeded(spec, |x, s, i| p.apply(x, s, i).unwrap(), true);
    }
}

#[test]
fn random_perturbations_apply_their_draws() {
    let x = t("x32").get(0).unwrap();
    let noisy = Perturbation::parse("noise:0.01")
        .unwrap()
        .apply(&x, 5, 9)
        .unwrap();
    let want = add_noise(&x, &draw_noise(32, 32, 5, 9).unwrap(), 0.01).unwrap();
    assert!(same(&noisy, &want));
    assert!(vals(&noisy).iter().all(|v| (0.0..=1.0).contains(v)));
    let z = vals(&draw_noise(32, 32, 5, 9).unwrap());
    let mean = z.iter().sum::<f32>() / z.len() as f32;
    let std = (z.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / z.len() as f32).sqrt();
    assert!(
        mean.abs() < 0.06 && (std - 1.0).abs() < 0.06,
        "N(0,1)? {mean} {std}"
    );

    let b = Perturbation::parse("brightness:0.5")
        .unwrap()
        .apply(&x, 5, 9)
        .unwrap();
    assert!(same(
        &b,
        &adjust_brightness(&x, draw_brightness(0.5, 5, 9)).unwrap()
    ));
    let h = Perturbation::parse("hue:0.3")
        .unwrap()
        .apply(&x, 5, 9)
        .unwrap();
    assert!(same(&h, &adjust_hue(&x, draw_hue(0.3, 5, 9)).unwrap()));

    let bright: Vec<f32> = (0..200).map(|i| draw_brightness(0.5, 1, i)).collect();
    assert!(bright.iter().all(|f| (0.5..=1.5).contains(f)));
    assert!(bright.iter().any(|&f| f < 0.75) && bright.iter().any(|&f| f > 1.25));
    let hues: Vec<f32> = (0..200).map(|i| draw_hue(0.3, 1, i)).collect();
    assert!(hues.iter().all(|f| (-0.3..=0.3).contains(f)));
    assert!(hues.iter().any(|&f| f < -0.15) && hues.iter().any(|&f| f > 0.15));

    for spec in ["blur:3", "blur:5", "flip"] {
        let p = Perturbation::parse(spec).unwrap();
        let out = p.apply(&x, 1, 0).unwrap();
        assert!(
            same(&out, &p.apply(&x, 2, 5).unwrap()),
            "{spec} is not random"
        );
        assert!(!same(&out, &x));
    }
}

#[test]
fn badnet_random_patch_follows_cleanclip() {
    let x = t("x64").get(0).unwrap();
    let b = BadNet::default(); // 16 px
    let mut rows = std::collections::HashSet::new();
    for index in 0..40 {
        let d = b.draw(64, 64, 11, index).unwrap();
        assert_eq!(d.values.dims(), [3, 16, 16]);
        assert!(d.row <= 64 - 1 - 16 && d.col <= 64 - 1 - 16);
        rows.insert(d.row);
        let out = b.apply(&x, 11, index).unwrap();
        let want = apply_patch(
            &x,
            &mean_plus_noise(&x, &d.values).unwrap(),
            Placement::At {
                row: d.row,
                col: d.col,
            },
        )
        .unwrap();
        assert!(same(&out, &want));
    }
    assert!(rows.len() > 10, "locations barely vary: {rows:?}");
    // The patch must fit with CleanCLIP's inclusive range [0, H - 1 - p].
    assert!(invalid(b.draw(16, 16, 0, 0)).contains("16"));
}

#[test]
fn badnet_fixed_is_one_pattern_at_the_bottom_right() {
    let b = Trigger::parse("badnet:fixed,size=6").unwrap();
    let x = t("x32");
    let out = b.apply(&x, 4, 0).unwrap();
    let again = b.apply(&x.get(0).unwrap(), 4, 17).unwrap();
    assert!(
        same(&out.get(0).unwrap(), &again),
        "fixed pattern depends on the index"
    );
    let patch = out.narrow(2, 26, 6).unwrap().narrow(3, 26, 6).unwrap();
    let v = vals(&patch);
    assert!(v.iter().all(|&p| p == 0.0 || p == 1.0));
    assert!(v.contains(&0.0) && v.contains(&1.0));
    // Black/white: all three channels equal; same pattern on both images.
    let p0 = vals(&patch.get(0).unwrap());
    assert_eq!(p0[..36], p0[36..72]);
    assert_eq!(p0, vals(&patch.get(1).unwrap()));
    // Nothing else moved.
    let rest = out.narrow(2, 0, 26).unwrap();
    assert!(same(&rest, &x.narrow(2, 0, 26).unwrap()));
    let other = b.apply(&x, 5, 0).unwrap();
    assert!(!same(&other, &out), "fixed pattern ignores the seed");
}

#[test]
fn label_consistent_full_amplitude_sets_black_and_white() {
    let x = t("x64").get(0).unwrap();
    let lc = Trigger::parse("lc").unwrap();
    let out = lc.apply(&x, 0, 0).unwrap();
    let o = out.to_vec3::<f32>().unwrap();
    let i = x.to_vec3::<f32>().unwrap();
    for c in 0..3 {
        for (y, xx, want) in [
            (0, 0, 1.0),
            (0, 1, 0.0),
            (1, 1, 1.0),
            (2, 2, 1.0),
            (2, 1, 0.0),
            (63, 63, 1.0),
            (63, 62, 0.0),
            (0, 63, 1.0),
            (61, 2, 1.0),
        ] {
            assert_eq!(o[c][y][xx], want, "channel {c} ({y}, {xx})");
        }
        for (y, xx) in [(0, 3), (3, 0), (32, 32), (60, 63)] {
            assert_eq!(o[c][y][xx], i[c][y][xx], "({y}, {xx}) changed");
        }
    }
    let p = corner_pattern(10, 8, 1).unwrap();
    assert_eq!(vals(&p).iter().filter(|v| **v != 0.0).count(), 4 * 9);
    assert!(invalid(corner_pattern(10, 8, 2)).contains("10 x 8"));
    assert!(same(&LabelConsistent::default().apply(&x).unwrap(), &out));
}

#[test]
fn pgd_step_signs_projects_and_clamps() {
    let d = &Device::Cpu;
    let image = Tensor::new(&[[[0.5f32, 0.46]], [[0.99, 0.01]], [[0.3, 0.52]]], d).unwrap();
    let grad = Tensor::new(&[[[3.0f32, -0.1]], [[2.0, -5.0]], [[0.0, 1e-6]]], d).unwrap();
    let orig = Tensor::new(&[[[0.5f32, 0.48]], [[0.99, 0.02]], [[0.3, 0.5]]], d).unwrap();
    let out = vals(&pgd_step(&image, &grad, &orig, 0.03, 0.02).unwrap());
    // 0.5 + 0.02; 0.46 - 0.02 → floor of the ball 0.45; 1.01 → 1; -0.01 → 0; sign(0) = 0;
    // 0.54 → ceiling of the ball 0.53.
    let want = [0.52f32, 0.45, 1.0, 0.0, 0.3, 0.53];
    for (o, w) in out.iter().zip(want) {
        assert!((o - w).abs() < 1e-6, "{out:?} vs {want:?}");
    }
    assert!(invalid(pgd_step(&image, &grad.get(0).unwrap(), &orig, 0.03, 0.02)).contains("shape"));
    assert!(invalid(pgd_step(&image, &grad, &orig, -1.0, 0.02)).contains("eps"));
}

// ---------------------------------------------------------------- blended pattern file

#[test]
fn blended_file_pattern_is_resized_and_blended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pattern.png");
    // A constant colour survives any resize exactly, so the expected blend is known.
    image::RgbImage::from_pixel(13, 7, image::Rgb([255, 0, 128]))
        .save(&path)
        .unwrap();
    let spec = format!("blended:{}", path.display());
    let trig = Trigger::parse(&spec).unwrap();
    assert_eq!(trig.name(), spec);
    let x = t("x32");
    let out = trig.apply(&x, 1, 0).unwrap();
    assert!(
        same(&out, &trig.apply(&x, 2, 9).unwrap()),
        "file pattern is random"
    );
    let c = Tensor::new(&[1.0f32, 0.0, 128.0 / 255.0], &Device::Cpu)
        .unwrap()
        .reshape((3, 1, 1))
        .unwrap();
    let want = (x
        .affine(0.8, 0.0)
        .unwrap()
        .broadcast_add(&c.affine(0.2, 0.0).unwrap()))
    .unwrap()
    .clamp(0f32, 1f32)
    .unwrap();
    let err = max_abs_diff(&out, &want);
    assert!(err < 1e-6, "file blend off by {err}");
    // Another size reuses the file, not the cached 32 px copy.
    let out64 = trig.apply(&t("x64"), 1, 0).unwrap();
    assert_eq!(out64.dims(), [1, 3, 64, 64]);
    match &trig {
        Trigger::Blended(b) => {
            assert_eq!(b.pattern(20, 10, 0, 0).unwrap().dims(), [3, 20, 10]);
        }
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn blended_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-pattern.png");
    match Trigger::parse(&format!("blended:{}", missing.display())) {
        Err(Error::MissingFile(p)) => assert_eq!(p, missing),
        other => panic!("expected MissingFile, got {other:?}"),
    }
    match Perturbation::parse(&format!("blended:{}", missing.display())) {
        Err(Error::MissingFile(p)) => assert_eq!(p, missing),
        other => panic!("expected MissingFile, got {other:?}"),
    }
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"not an image").unwrap();
    match Blended::from_file(&broken) {
        Err(Error::Image { path, .. }) => assert_eq!(path, broken),
        other => panic!("expected Error::Image, got {other:?}"),
    }
}

// ---------------------------------------------------------------- parsers

#[test]
fn trigger_specs_parse_and_round_trip() {
    let cases = [
        ("badnet", "badnet"),
        ("badnet:fixed", "badnet:fixed"),
        ("badnet:size=8", "badnet:size=8"),
        (" badnet:size=4, fixed ", "badnet:fixed,size=4"),
        ("badnet:size=16", "badnet"),
        ("blended", "blended"),
        ("wanet", "wanet"),
        ("wanet:k=4,s=0.5", "wanet:k=4,s=0.5"),
        ("wanet:s=0.5", "wanet:s=0.5"),
        ("lc", "lc"),
        ("label-consistent:amp=0.25,cell=2", "lc:amp=0.25,cell=2"),
    ];
    for (spec, canonical) in cases {
        let trig: Trigger = spec.parse().unwrap();
        assert_eq!(trig.name(), canonical, "{spec}");
        assert_eq!(Trigger::parse(canonical).unwrap().name(), canonical);
        assert_eq!(trig.to_string(), canonical);
    }
    match Trigger::parse("wanet:k=4,s=0.5").unwrap() {
        Trigger::WaNet(w) => assert_eq!(
            w,
            WaNet {
                k: Some(4),
                s: 0.5,
                ..WaNet::default()
            }
        ),
        other => panic!("{other:?}"),
    }
    match Trigger::parse("badnet:fixed").unwrap() {
        Trigger::BadNet(b) => assert_eq!(
            b,
            BadNet {
                size: 16,
                fixed: true
            }
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Trigger::parse("blended").unwrap(),
        Trigger::Blended(Blended {
            pattern: blended::BlendPattern::Noise,
            ..
        })
    ));
    // The WaNet default grid follows the image, never a fixed 224.
    let w = WaNet::default();
    assert_eq!(w.draw_control(32, 0).unwrap().dims(), [2, 32, 32]);
    assert_eq!(w.draw_control(64, 0).unwrap().dims(), [2, 64, 64]);
    let c = vals(&w.draw_control(64, 0).unwrap());
    assert!(c.iter().all(|v| (-1.0..1.0).contains(v)));
    assert!(c.iter().any(|&v| v < -0.9) && c.iter().any(|&v| v > 0.9));
}

#[test]
fn bad_trigger_specs_are_named_errors() {
    for spec in [
        "",
        "bogus",
        "badnet:size=0",
        "badnet:size=x",
        "badnet:size",
        "badnet:oops",
        "badnet:fixed,",
        "blended:",
        "wanet:k=0",
        "wanet:k=-1",
        "wanet:q=1",
        "wanet:s=nan",
        "lc:amp=2",
        "lc:cell=0",
    ] {
        let msg = invalid(Trigger::parse(spec));
        assert!(msg.contains(&format!("`{spec}`")), "{spec}: {msg}");
    }
}

#[test]
fn perturbation_specs_parse() {
    let cases = [
        ("noise:0.001", "noise:0.001"),
        ("noise:0.03", "noise:0.03"),
        ("blur:3", "blur:3"),
        ("blur:5", "blur:5"),
        ("brightness:0.5", "brightness:0.5"),
        ("hue:0.3", "hue:0.3"),
        ("flip", "flip"),
        ("badnet:fixed", "badnet:fixed"),
        ("wanet:k=4,s=0.5", "wanet:k=4,s=0.5"),
    ];
    for (spec, canonical) in cases {
        let p: Perturbation = spec.parse().unwrap();
        assert_eq!(p.name(), canonical);
        assert_eq!(Perturbation::parse(canonical).unwrap().name(), canonical);
    }
    assert!(matches!(
        Perturbation::parse("noise:0.03").unwrap(),
        Perturbation::Noise { std } if std == 0.03
    ));
    assert!(matches!(
        Perturbation::parse("blur:5").unwrap(),
        Perturbation::Blur { kernel: 5 }
    ));
    assert!(matches!(
        Perturbation::parse("lc").unwrap(),
        Perturbation::Trigger(Trigger::LabelConsistent(_))
    ));

    let list = Perturbation::parse_list("noise:0.03,blur:3,flip,badnet").unwrap();
    let names: Vec<String> = list.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["noise:0.03", "blur:3", "flip", "badnet"]);
    let list = Perturbation::parse_list("noise:0.01, wanet:k=4,s=0.5,hue:0.3,badnet:fixed,size=8")
        .unwrap();
    let names: Vec<String> = list.iter().map(|p| p.name()).collect();
    assert_eq!(
        names,
        [
            "noise:0.01",
            "wanet:k=4,s=0.5",
            "hue:0.3",
            "badnet:fixed,size=8"
        ]
    );
}

#[test]
fn bad_perturbation_specs_are_named_errors() {
    for spec in [
        "noise",
        "noise:abc",
        "noise:-1",
        "noise:inf",
        "blur",
        "blur:4",
        "blur:x",
        "blur:-3",
        "brightness:1.5",
        "hue:0.7",
        "hue:-0.1",
        "flip:1",
        "sharpen:2",
        "wanet:k=0",
    ] {
        let msg = invalid(Perturbation::parse(spec));
        assert!(msg.contains(&format!("`{spec}`")), "{spec}: {msg}");
    }
    for (list, culprit) in [
        ("noise:0.03,,flip", "noise:0.03,,flip"),
        ("k=4,wanet", "k=4"),
        ("noise:0.03,bogus", "bogus"),
        ("", ""),
    ] {
        let msg = invalid(Perturbation::parse_list(list));
        assert!(msg.contains(&format!("`{culprit}`")), "{list}: {msg}");
    }
}

#[test]
fn shapes_are_checked() {
    let grey = Tensor::zeros((1, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let trig = Trigger::parse("badnet").unwrap();
    assert!(invalid(trig.apply(&grey, 0, 0)).contains("[1, 32, 32]"));
    let p = Perturbation::parse("blur:5").unwrap();
    let tiny = Tensor::zeros((3, 2, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(invalid(p.apply(&tiny, 0, 0)).contains("padding"));
    let x = t("x32");
    let big = Tensor::zeros((3, 40, 40), DType::F32, &Device::Cpu).unwrap();
    assert!(invalid(apply_patch(&x, &big, Placement::Centre)).contains("40"));
    let patch = Tensor::zeros((3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let off = Placement::At { row: 30, col: 0 };
    assert!(invalid(apply_patch(&x, &patch, off)).contains("row 30"));
    assert!(invalid(blended::blend(&x, &patch, 0.2)).contains("pattern shape"));
}

#[test]
fn other_float_dtypes_come_back_in_their_dtype() {
    let x = t("x32").to_dtype(DType::F64).unwrap();
    for spec in [
        "noise:0.03",
        "blur:3",
        "hue:0.3",
        "flip",
        "wanet:k=4",
        "badnet:size=8",
    ] {
        let out = Perturbation::parse(spec).unwrap().apply(&x, 1, 0).unwrap();
        assert_eq!(out.dtype(), DType::F64, "{spec}");
        assert_eq!(out.dims(), x.dims(), "{spec}");
    }
}

#[test]
fn blended_fixed_is_one_pattern_per_seed() {
    let b = Trigger::parse("blended:fixed").unwrap();
    assert_eq!(b.name(), "blended:fixed");
    let img = Tensor::full(0.5f32, (3, 8, 8), &Device::Cpu).unwrap();
    let a = b.apply(&img, 3, 0).unwrap();
    let c = b.apply(&img, 3, 41).unwrap();
    let d = b.apply(&img, 4, 0).unwrap();
    let diff = |x: &Tensor, y: &Tensor| {
        (x - y)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(
        diff(&a, &c),
        0.0,
        "the fixed pattern must not depend on the image index"
    );
    assert!(
        diff(&a, &d) > 0.0,
        "the fixed pattern must depend on the seed"
    );
}

/// B1: every trigger `Trigger::parse` knows is also a perturbation, the optimised patch
/// included (`rvpt defend --trigger patch:FILE` adds the trigger to the PR perturbations, and
/// `rvpt pr --perturb patch:FILE` measures it).
#[test]
fn every_trigger_is_a_perturbation_patch_file_included() {
    use rvpt::attacks::{patch::PatchFile, Perturbation, Trigger, TRIGGER_NAMES};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("patch.safetensors");
    let patch = Tensor::rand(0f32, 1f32, (3, 4, 4), &Device::Cpu).unwrap();
    PatchFile::save(&patch, &file).unwrap();
    let spec = format!("patch:{}", file.display());
    let p = Perturbation::parse(&spec).unwrap();
    let t = Trigger::parse(&spec).unwrap();
    let img = Tensor::rand(0f32, 1f32, (3, 32, 32), &Device::Cpu).unwrap();
    assert!(same(
        &p.apply(&img, 7, 0).unwrap(),
        &t.apply(&img, 7, 0).unwrap()
    ));
    assert!(!same(&p.apply(&img, 7, 0).unwrap(), &img));
    for list in [format!("noise:0.03,{spec}"), format!("{spec},flip")] {
        assert_eq!(Perturbation::parse_list(&list).unwrap().len(), 2, "{list}");
    }
    // Placement: random positions are seeded per image; an unknown option is named.
    let random = Trigger::parse(&format!("{spec},pos=random")).unwrap();
    assert_eq!(random.name(), format!("{spec},pos=random"));
    let (a, b) = (
        random.apply(&img, 7, 0).unwrap(),
        random.apply(&img, 7, 1).unwrap(),
    );
    assert!(same(&a, &random.apply(&img, 7, 0).unwrap()));
    assert!(!same(&a, &b), "index 0 and 1 drew the same position");
    let err = invalid(Trigger::parse(&format!("{spec},pos=diagonal")));
    assert!(err.contains("unknown patch option"), "{err}");
    // The two parsers cannot drift apart again: no trigger name is unknown to Perturbation.
    for name in TRIGGER_NAMES {
        if let Err(e) = Perturbation::parse(name) {
            assert!(
                !e.to_string().contains("unknown perturbation"),
                "{name}: {e}"
            );
        }
    }
}

/// CleanCLIP's bare-tensor grid and BackdoorBench's state dict (both written by PyTorch with the
/// permuted, channel-first layout those projects save) are read as saved, and warp as torch does.
#[test]
fn wanet_grid_files_of_cleanclip_and_backdoorbench_warp_as_pytorch() {
    use rvpt::attacks::wanet::upsampled_noise;
    use rvpt::attacks::{read_noise_grid, Trigger};
    let g = load_tensors("wanet/golden.safetensors");
    let want: Vec<f32> = g["noise"].flatten_all().unwrap().to_vec1().unwrap();
    let cleanclip = read_noise_grid(&common::fixture("wanet/cleanclip_noise_grid.pt")).unwrap();
    let bb = read_noise_grid(&common::fixture("wanet/backdoorbench_state_dict.pt")).unwrap();
    assert_eq!((cleanclip.h, cleanclip.w), (32, 32));
    assert_eq!(cleanclip, bb);
    assert_eq!(cleanclip.noise, want, "the strides were not followed");
    // Our bicubic upsampling of the same control gives the same grid.
    let ours = upsampled_noise(&g["control"], 32, 32).unwrap();
    let err = ours
        .noise
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-5, "upsampled noise differs by {err}");
    for (spec, golden) in [("", "warped_s1"), (",s=0.5", "warped_s05")] {
        for file in ["cleanclip_noise_grid.pt", "backdoorbench_state_dict.pt"] {
            let path = common::fixture(&format!("wanet/{file}"));
            let t = Trigger::parse(&format!("wanet:grid={}{spec}", path.display())).unwrap();
            assert!(!t.is_seeded(), "a grid file does not depend on the seed");
            let out = t.apply(&g["image"], 0, 0).unwrap();
            let err = max_abs_diff(&out, &g[golden]);
            assert!(err < 1e-5, "{file}{spec}: {err}");
            assert_eq!(Trigger::parse(&t.name()).unwrap().name(), t.name());
        }
    }
    // A grid is for one image size; a wrong size or file is named.
    let t = Trigger::parse(&format!(
        "wanet:grid={}",
        common::fixture("wanet/cleanclip_noise_grid.pt").display()
    ))
    .unwrap();
    let err = t.apply(
        &Tensor::zeros((3, 64, 64), DType::F32, &Device::Cpu).unwrap(),
        0,
        0,
    );
    assert!(err.unwrap_err().to_string().contains("made for 32 x 32"));
    let err = Trigger::parse(&format!(
        "wanet:grid={}",
        common::fixture("wanet/golden.safetensors").display()
    ))
    .unwrap_err();
    assert!(err.to_string().contains("not a WaNet noise grid"), "{err}");
    assert!(Trigger::parse("wanet:grid=/no/such/grid.pt").is_err());
}

/// rvpt's own warp written in each project's layout reads back bit-exact (set RVPT_KEEP_GRIDS to
/// a folder to keep the files for `make_wanet_grids.py --check`).
#[test]
fn wanet_grid_files_round_trip_in_both_layouts() {
    use rvpt::attacks::{read_noise_grid, write_noise_grid, GridFormat, WaNet};
    let dir = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("RVPT_KEEP_GRIDS").map(std::path::PathBuf::from);
    let out = keep.as_deref().unwrap_or(dir.path());
    let g = load_tensors("wanet/golden.safetensors");
    let golden = rvpt::attacks::wanet::upsampled_noise(&g["control"], 32, 32).unwrap();
    let seeded = WaNet {
        k: Some(4),
        ..WaNet::default()
    }
    .noise(32, 32, 7)
    .unwrap();
    for (format, name) in [
        (GridFormat::CleanClip, "cleanclip.pt"),
        (GridFormat::BackdoorBench, "backdoorbench.pt"),
    ] {
        write_noise_grid(&out.join(name), &golden, format).unwrap();
        assert_eq!(read_noise_grid(&out.join(name)).unwrap(), golden);
        let path = dir.path().join(format!("seeded-{name}"));
        write_noise_grid(&path, &seeded, format).unwrap();
        assert_eq!(read_noise_grid(&path).unwrap(), seeded);
    }
}

/// WaNet's noise mode: the same warp with at most 1/H of grid noise (half a pixel), a fresh
/// draw per image index, the same for the same index.
#[test]
fn wanet_noise_mode_warps_with_small_seeded_noise() {
    let wanet = match Trigger::parse("wanet:k=4,s=8").unwrap() {
        Trigger::WaNet(w) => w,
        _ => unreachable!(),
    };
    let img = Tensor::rand(0f32, 1f32, (3, 32, 32), &Device::Cpu).unwrap();
    let warped = wanet.apply(&img, 7).unwrap();
    let noisy = |index| wanet.apply_with_noise(&img, 7, index).unwrap();
    assert!(same(&noisy(3), &noisy(3)));
    assert!(!same(&noisy(3), &noisy(4)));
    assert!(!same(&noisy(3), &warped));
    // Half a pixel of displacement on U(0, 1) pixels moves values by well under 1.
    let d = vals(&(noisy(3) - &warped).unwrap().abs().unwrap());
    let mean = d.iter().sum::<f32>() / d.len() as f32;
    assert!(mean > 0.01 && mean < 0.3, "mean |noisy - warped| = {mean}");
}

/// The noise-mode poisoner poisons the pairs plain poisoning would, adds ratio x as many others
/// that keep their caption, and refuses a training run it was not drawn for.
#[test]
fn wanet_noise_mode_poisoner_keeps_captions_of_its_cross_pairs() {
    use rvpt::train::contrastive::{poisoned_indices, Pair, Poisoner, WanetNoiseModePoisoner};
    let wanet = match Trigger::parse("wanet:k=4,s=8").unwrap() {
        Trigger::WaNet(w) => w,
        _ => unreachable!(),
    };
    let (n, rate, seed) = (200, 0.05, 3);
    let p = WanetNoiseModePoisoner::new(
        wanet.clone(),
        "a photo of a heart.".into(),
        7,
        n,
        rate,
        seed,
        2.0,
    )
    .unwrap();
    let chosen = p.chosen(n, rate, seed).unwrap();
    let plain = poisoned_indices(n, rate, seed);
    assert_eq!(plain.iter().filter(|&&x| x).count(), 10);
    assert_eq!(p.cross_count(), 20);
    assert_eq!(chosen.iter().filter(|&&x| x).count(), 30);
    assert!(plain.iter().zip(&chosen).all(|(&a, &b)| !a || b));
    let img = Tensor::rand(0f32, 1f32, (3, 32, 32), &Device::Cpu).unwrap();
    let pair = || Pair {
        image: img.clone(),
        caption: "a red circle".into(),
    };
    let (mut poisoned, mut cross) = (0, 0);
    for i in (0..n).filter(|&i| chosen[i]) {
        let out = p.poison(pair(), i).unwrap();
        assert!(!same(&out.image, &img), "pair {i} not warped");
        if plain[i] {
            assert_eq!(out.caption, "a photo of a heart.");
            assert!(same(&out.image, &wanet.apply(&img, 7).unwrap()));
            poisoned += 1;
        } else {
            assert_eq!(out.caption, "a red circle");
            cross += 1;
        }
    }
    assert_eq!((poisoned, cross), (10, 20));
    // More cross pairs than clean ones: capped at what is left.
    let all = WanetNoiseModePoisoner::new(wanet.clone(), "x".into(), 7, n, 0.5, seed, 3.0).unwrap();
    assert_eq!(all.cross_count(), 100);
    assert!(invalid(p.chosen(n, 0.1, seed)).contains("noise mode"));
    assert!(invalid(
        WanetNoiseModePoisoner::new(wanet, "x".into(), 7, n, rate, seed, -1.0).map(|_| ())
    )
    .contains("cross ratio -1"));
}
