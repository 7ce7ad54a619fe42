//! CLIP preprocessing against transformers' CLIPImageProcessor on real photos (JPEG, PNG, WebP,
//! greyscale, RGBA): the 8-bit resized/cropped image within 1/255 mean absolute error.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{fixture, load_tensors};
use rvpt::image;

fn order() -> Vec<String> {
    serde_json::from_str(&std::fs::read_to_string(fixture("images/order.json")).unwrap()).unwrap()
}

#[test]
fn pixels_match_clip_image_processor() {
    let r = load_tensors("preprocess.safetensors");
    let golden_rgb = r["rgb"].to_dtype(DType::F32).unwrap();
    let golden_pv = r["pixel_values"].to_dtype(DType::F32).unwrap();
    for (i, name) in order().iter().enumerate() {
        let img = image::load_rgb(&fixture(&format!("images/{name}"))).unwrap();
        let rgb = image::resize_and_crop(&img, 224);
        let ours = image::to_unit_tensor(&rgb, &Device::Cpu).unwrap();
        let theirs = (golden_rgb.get(i).unwrap() / 255.0).unwrap();
        let mean = common::mean_abs_diff(&ours, &theirs);
        let max = common::max_abs_diff(&ours, &theirs);
        // The normalised tensor, against transformers' own pixel_values (stored as f16).
        let pv = image::normalize(&ours).unwrap();
        let pv_err = common::mean_abs_diff(&pv, &golden_pv.get(i).unwrap());
        println!(
            "{name}: {}x{} → mean abs {:.3}/255, max {:.0}/255; normalised mean abs {pv_err:.4}",
            img.width(),
            img.height(),
            mean * 255.0,
            max * 255.0
        );
        assert!(mean <= 1.0 / 255.0, "{name}: mean abs error {mean} > 1/255");
        assert!(
            pv_err <= 1.0 / 255.0 / 0.26,
            "{name}: normalised error {pv_err}"
        );
    }
}

#[test]
fn resize_output_size_follows_transformers() {
    assert_eq!(image::shortest_edge_size(451, 300, 224), (336, 224));
    assert_eq!(image::shortest_edge_size(240, 320, 224), (224, 298));
    assert_eq!(image::shortest_edge_size(224, 224, 224), (224, 224));
}

#[test]
fn normalize_uses_clip_mean_and_std() {
    let ones = Tensor::ones((3, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let n = image::normalize(&ones).unwrap();
    let v: Vec<f32> = n.flatten_all().unwrap().to_vec1().unwrap();
    for c in 0..3 {
        let want = (1.0 - image::CLIP_MEAN[c]) / image::CLIP_STD[c];
        assert!((v[c * 4] - want).abs() < 1e-6);
    }
}

#[test]
fn unreadable_image_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.jpg");
    std::fs::write(&bad, b"\xFF\xD8\xFF\xE0 not really a jpeg").unwrap();
    match image::load_rgb(&bad) {
        Err(rvpt::Error::Image { path, .. }) => assert_eq!(path, bad),
        other => panic!("expected Error::Image, got {other:?}"),
    }
    match image::load_rgb(&dir.path().join("absent.png")) {
        Err(rvpt::Error::MissingFile(p)) => assert!(p.ends_with("absent.png")),
        other => panic!("expected MissingFile, got {other:?}"),
    }
}

/// Pillow's bicubic resize, bit for bit (tests/reference/make_resize_fixtures.py): enlarging
/// and reducing, real photos and a high-frequency pattern.
#[test]
fn pil_resize_is_bit_exact() {
    let r = load_tensors("resize.safetensors");
    let pattern = |w: u32, h: u32| {
        ::image::RgbImage::from_fn(w, h, |x, y| {
            ::image::Rgb(std::array::from_fn(|c| {
                ((x * 7 + y * 13 + c as u32 * 101 + (x * y) % 31) % 256) as u8
            }))
        })
    };
    let cases = [
        (
            "coffee_336x224",
            image::load_rgb(&fixture("images/coffee.png")).unwrap(),
            (336, 224),
        ),
        (
            "camera_224x298",
            image::load_rgb(&fixture("images/camera.png")).unwrap(),
            (224, 298),
        ),
        ("pattern451x300_168x112", pattern(451, 300), (168, 112)),
        ("pattern37x23_91x57", pattern(37, 23), (91, 57)),
    ];
    for (name, img, (w, h)) in cases {
        let ours = image::pil::resize_bicubic(&img, w, h);
        let theirs: Vec<u8> = r[name].flatten_all().unwrap().to_vec1().unwrap();
        let differ = ours
            .as_raw()
            .iter()
            .zip(&theirs)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(ours.as_raw().len(), theirs.len(), "{name}: size");
        assert_eq!(
            differ,
            0,
            "{name}: {differ} of {} values differ from Pillow",
            theirs.len()
        );
    }
}

/// Images far from the model's input size are used, with a warning naming the file and both
/// sizes (a 1x1 image classified "100% star" said nothing before).
#[test]
fn images_far_from_the_input_size_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = dir.path().join("tiny.png");
    let huge = dir.path().join("huge.png");
    let ok = dir.path().join("ok.png");
    ::image::RgbImage::from_pixel(1, 1, ::image::Rgb([200, 30, 30]))
        .save(&tiny)
        .unwrap();
    // The toy models see 32 px: 2,000 px is more than 32 times that.
    ::image::RgbImage::from_pixel(2000, 1200, ::image::Rgb([30, 30, 200]))
        .save(&huge)
        .unwrap();
    ::image::RgbImage::from_pixel(48, 40, ::image::Rgb([30, 200, 30]))
        .save(&ok)
        .unwrap();
    let classify = |img: &std::path::Path| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_rvpt"))
            .args([
                "classify",
                "--weights",
                "toy2-badnet",
                "--labels",
                "heart,star",
            ])
            .arg(img)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = classify(&tiny);
    assert!(
        err.contains("tiny.png is 1x1, far below the model's 32x32 input"),
        "{err}"
    );
    let err = classify(&huge);
    assert!(err.contains("huge.png is 2000x1200, far above"), "{err}");
    assert!(!classify(&ok).contains("warning"));
}

/// The random resized crop's area share runs from `min_scale` to 1: at 1 (`--crop-scale 1`) the
/// crop is the whole image, resized, whatever is drawn; CoOp's 0.08 does crop.
#[test]
fn random_resized_crop_keeps_the_whole_image_at_scale_one() {
    use rand::SeedableRng;
    let img = ::image::RgbImage::from_fn(48, 48, |x, y| {
        ::image::Rgb([(x * 5) as u8, (y * 5) as u8, ((x * y) % 256) as u8])
    });
    let whole = image::pil::resize_bicubic(&img, 32, 32);
    let crop = |scale: f64, seed: u64| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        image::random_resized_crop(&img, 32, scale, &mut rng)
    };
    for seed in 0..20 {
        assert!(crop(1.0, seed) == whole, "seed {seed}: scale 1 cropped");
    }
    assert!((0..20).all(|seed| crop(image::COOP_CROP_SCALE, seed) != whole));
}
