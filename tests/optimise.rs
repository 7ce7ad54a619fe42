//! Attacks that use the victim's gradients (src/attacks/optimise.rs) on the committed toy CLIP:
//! PGD stays in its L∞ ball and in [0, 1] and raises the loss it ascends.

mod common;

use candle_core::{DType, Device, Tensor, D};
use rvpt::attacks::optimise::{pgd_away_from_labels, pgd_away_from_text, PgdConfig};
use rvpt::engine::Engine;
use rvpt::toy::lab::TEST_START;
use rvpt::toy::{ToyWorld, CLASSES};

const EPS: f32 = 8.0 / 255.0;
const STEP: f32 = 2.0 / 255.0;

/// PGD with radius `eps` and `iters` steps of [`STEP`].
fn pgd(eps: f32, iters: usize) -> PgdConfig {
    PgdConfig {
        eps,
        step: STEP,
        iters,
    }
}

fn toy() -> Engine {
    Engine::load("toy-clean", &Device::Cpu, DType::F32).unwrap()
}

/// `per_class` test images per class, in class order, with their labels.
fn toy_images(per_class: usize) -> (Tensor, Vec<usize>) {
    let world = ToyWorld::new(32, 0).unwrap();
    let n = per_class * CLASSES.len();
    let samples: Vec<_> = (0..n as u64)
        .map(|i| world.sample(TEST_START + i))
        .collect();
    let images: Vec<Tensor> = samples
        .iter()
        .map(|s| rvpt::image::to_unit_tensor(&s.image, &Device::Cpu).unwrap())
        .collect();
    (
        Tensor::stack(&images, 0).unwrap(),
        samples.iter().map(|s| s.class).collect(),
    )
}

fn class_text(e: &Engine) -> Tensor {
    let labels: Vec<String> = CLASSES.iter().map(|c| c.to_string()).collect();
    rvpt::text::class_text_embeddings(&e.model, &e.tokenizer, &labels, &e.device).unwrap()
}

fn unit_embeds(e: &Engine, images: &Tensor) -> Tensor {
    let pixels = rvpt::image::normalize(images).unwrap();
    let embeds = e.model.image_embeds(&pixels).unwrap();
    let norm = embeds
        .sqr()
        .unwrap()
        .sum_keepdim(D::Minus1)
        .unwrap()
        .sqrt()
        .unwrap();
    embeds.broadcast_div(&norm).unwrap()
}

/// Mean zero-shot cross-entropy of `labels`, computed here from log-softmax (not the library's).
fn zero_shot_ce(e: &Engine, text: &Tensor, images: &Tensor, labels: &[usize]) -> f32 {
    let scale = e.model.logit_scale().unwrap();
    let logits = unit_embeds(e, images)
        .matmul(&text.t().unwrap())
        .unwrap()
        .broadcast_mul(&scale)
        .unwrap();
    let logp: Vec<Vec<f32>> = candle_nn::ops::log_softmax(&logits, D::Minus1)
        .unwrap()
        .to_vec2()
        .unwrap();
    -labels
        .iter()
        .enumerate()
        .map(|(i, &l)| logp[i][l])
        .sum::<f32>()
        / labels.len() as f32
}

fn range(x: &Tensor) -> (f32, f32) {
    let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    v.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &a| {
            (lo.min(a), hi.max(a))
        })
}

#[test]
fn pgd_away_from_labels_stays_in_the_ball_and_raises_the_loss() {
    let e = toy();
    let text = class_text(&e);
    let (images, labels) = toy_images(2);
    let before = zero_shot_ce(&e, &text, &images, &labels);
    let adv = pgd_away_from_labels(&e.model, &text, &images, &labels, &pgd(EPS, 5)).unwrap();
    assert_eq!(adv.dims(), images.dims());
    let moved = common::max_abs_diff(&adv, &images);
    let (lo, hi) = range(&adv);
    let after = zero_shot_ce(&e, &text, &adv, &labels);
    println!("L∞ {moved:.5} (eps {EPS:.5}), range [{lo}, {hi}], CE {before:.4} → {after:.4}");
    assert!(moved <= EPS + 1e-6, "left the eps-ball: {moved}");
    // 5 steps of 2/255 reach the 8/255 boundary on some pixel.
    assert!(moved >= EPS - 1e-6, "PGD barely moved: {moved}");
    assert!(lo >= 0.0 && hi <= 1.0, "left [0, 1]: [{lo}, {hi}]");
    assert!(after > before, "CE did not rise: {before} → {after}");
    // Zero steps leave the images as they are.
    let same = pgd_away_from_labels(&e.model, &text, &images, &labels, &pgd(EPS, 0)).unwrap();
    assert_eq!(common::max_abs_diff(&same, &images), 0.0);
}

#[test]
fn pgd_away_from_text_lowers_the_cosine() {
    let e = toy();
    let heart = CLASSES.iter().position(|&c| c == "heart").unwrap();
    let text = class_text(&e).get(heart).unwrap();
    let (images, _) = toy_images(1);
    let cos = |x: &Tensor| -> f32 {
        unit_embeds(&e, x)
            .matmul(&text.unsqueeze(1).unwrap())
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    let adv = pgd_away_from_text(&e.model, &text, &images, &pgd(EPS, 5)).unwrap();
    let moved = common::max_abs_diff(&adv, &images);
    let (lo, hi) = range(&adv);
    println!(
        "L∞ {moved:.5}, cosine {:.4} → {:.4}",
        cos(&images),
        cos(&adv)
    );
    assert!(moved <= EPS + 1e-6 && moved > 0.0, "L∞ {moved}");
    assert!(lo >= 0.0 && hi <= 1.0, "left [0, 1]: [{lo}, {hi}]");
    assert!(cos(&adv) < cos(&images));
}

#[test]
fn pgd_bad_input_is_named() {
    let e = toy();
    let text = class_text(&e);
    let (images, labels) = toy_images(1);
    let err = pgd_away_from_labels(&e.model, &text, &images, &labels[..9], &pgd(EPS, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("10 images for 9 labels"), "{err}");
    let mut bad = labels.clone();
    bad[3] = 10;
    let err = pgd_away_from_labels(&e.model, &text, &images, &bad, &pgd(EPS, 1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("label 10 is out of range for 10 classes"),
        "{err}"
    );
    let err = pgd_away_from_labels(&e.model, &text, &images, &labels, &pgd(-1.0, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("eps (-1)"), "{err}");
}

// ---------------------------------------------------------------- label-consistent poisoning

use rvpt::attacks::LabelConsistent;
use rvpt::train::contrastive::{
    caption_names, label_consistent_indices, train, ContrastiveConfig, LabelConsistentConfig,
    LabelConsistentPoisoner, Pair, Poisoner,
};
use std::sync::Mutex;

#[test]
fn captions_name_classes_as_words() {
    assert!(caption_names("A photo of a Heart.", "heart"));
    assert!(caption_names("heart, red, striped", "heart"));
    assert!(!caption_names("two hearts", "heart"));
    assert!(!caption_names("a sweetheart", "heart"));
    assert!(caption_names(
        "a Golden  Retriever on grass",
        "golden retriever"
    ));
    assert!(!caption_names(
        "a golden dog, a retriever",
        "golden retriever"
    ));
    assert!(!caption_names("anything", " "));
}

#[test]
fn label_consistent_choice_is_among_targets_and_capped() {
    let is_target: Vec<bool> = (0..100).map(|i| i % 10 == 7).collect();
    let mask = label_consistent_indices(&is_target, 0.05, 3);
    assert_eq!(mask.iter().filter(|&&m| m).count(), 5);
    assert!(mask.iter().zip(&is_target).all(|(&m, &t)| !m || t));
    assert_eq!(mask, label_consistent_indices(&is_target, 0.05, 3));
    assert_ne!(mask, label_consistent_indices(&is_target, 0.05, 4));
    // The rate counts all pairs; only 10 are of the target class.
    let capped = label_consistent_indices(&is_target, 0.5, 3);
    assert_eq!(capped, is_target);
}

/// One poisoning call: index, caption in and out, image in and out.
type Seen = (usize, String, String, Tensor, Tensor);

/// Records what `train` hands the poisoner and what comes back.
struct Spy<'a> {
    inner: &'a LabelConsistentPoisoner,
    seen: Mutex<Vec<Seen>>,
}

impl Poisoner for Spy<'_> {
    fn poison(&self, pair: Pair, index: usize) -> rvpt::Result<Pair> {
        let (caption, image) = (pair.caption.clone(), pair.image.clone());
        let out = self.inner.poison(pair, index)?;
        self.seen.lock().unwrap().push((
            index,
            caption,
            out.caption.clone(),
            image,
            out.image.clone(),
        ));
        Ok(out)
    }

    fn chosen(&self, n: usize, rate: f64, seed: u64) -> rvpt::Result<Vec<bool>> {
        self.inner.chosen(n, rate, seed)
    }
}

#[test]
fn label_consistent_poisoning_trains_and_touches_only_target_pairs() {
    let e = toy();
    let ckpt = rvpt::engine::read_checkpoint(&e.weights).unwrap();
    let vars = rvpt::model::init::ClipVars::from_tensors(&ckpt.tensors, &ckpt.config, &Device::Cpu)
        .unwrap();
    // 40 training pairs; class = index % 10, so 4 hearts (7, 17, 27, 37).
    let source = rvpt::toy::lab::ToyPairs {
        world: ToyWorld::new(32, 0).unwrap(),
        start: 0,
        len: 40,
    };
    let (rate, seed) = (0.075, 5); // round(3) of 40
    let pgd = PgdConfig {
        iters: 3,
        ..PgdConfig::default()
    };
    let lc = LabelConsistentPoisoner::build(
        &e.model,
        &e.tokenizer,
        &source,
        LabelConsistentConfig {
            target: "heart".into(),
            trigger: LabelConsistent::default(),
            pgd,
            poison_rate: rate,
            seed,
        },
    )
    .unwrap();
    assert_eq!((lc.target_pairs, lc.count()), (4, 3));
    let chosen: Vec<usize> = (0..40).filter(|&i| lc.mask()[i]).collect();
    assert!(chosen.iter().all(|i| i % 10 == 7), "{chosen:?}");

    let spy = Spy {
        inner: &lc,
        seen: Mutex::new(Vec::new()),
    };
    let cfg = ContrastiveConfig {
        epochs: 1,
        batch_size: 20,
        seed,
        poison_rate: rate,
        lr: 1e-4,
        warmup: 0,
    };
    let mut opt = rvpt::optim::AdamW::single(
        vars.vars.iter().map(|(_, v)| v.clone()).collect(),
        0.0,
        rvpt::optim::AdamWConfig {
            lr: 1e-4,
            ..Default::default()
        },
    )
    .unwrap();
    let logs = train(
        &vars,
        &e.tokenizer,
        &source,
        Some(&spy),
        &cfg,
        &mut opt,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(logs.len(), 2);
    assert!(logs.iter().all(|l| l.loss.is_finite()));

    let mut seen = spy.seen.into_inner().unwrap();
    seen.sort_by_key(|s| s.0);
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), chosen);
    let corners = rvpt::attacks::label_consistent::corner_pattern(32, 32, 1).unwrap();
    let corners: Vec<f32> = corners.flatten_all().unwrap().to_vec1().unwrap();
    for (index, before, after, clean, poisoned) in &seen {
        assert_eq!(before, after, "pair {index}: caption changed");
        assert!(caption_names(after, "heart"), "pair {index}: {after}");
        let clean: Vec<f32> = clean.flatten_all().unwrap().to_vec1().unwrap();
        let poisoned: Vec<f32> = poisoned.flatten_all().unwrap().to_vec1().unwrap();
        let mut moved = 0f32;
        for (k, (&c, &p)) in clean.iter().zip(&poisoned).enumerate() {
            let q = corners[k % (32 * 32)];
            if q != 0.0 {
                // The trigger: white cells exactly 1, black cells exactly 0.
                assert_eq!(
                    p,
                    if q > 0.0 { 1.0 } else { 0.0 },
                    "pair {index}, pixel {k}"
                );
            } else {
                moved = moved.max((p - c).abs());
            }
        }
        assert!(
            moved > 0.0 && moved <= pgd.eps + 1e-6,
            "pair {index}: PGD moved the rest by {moved}"
        );
    }

    // Training with another rate or seed than the poisoner was built for is refused.
    let err = train(
        &vars,
        &e.tokenizer,
        &source,
        Some(&lc),
        &ContrastiveConfig {
            poison_rate: 0.1,
            ..cfg
        },
        &mut opt,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("built for 40 pairs, rate 0.075"), "{err}");
}
