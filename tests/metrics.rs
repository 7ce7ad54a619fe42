//! Metrics on hand-built cases.

use candle_core::{Device, Tensor};
use rvpt::metrics::*;

#[test]
fn wilson_interval_known_values() {
    let (lo, hi) = wilson_interval(8, 10, 1.96);
    assert!(
        (lo - 0.4902).abs() < 1e-3 && (hi - 0.9433).abs() < 1e-3,
        "{lo} {hi}"
    );
    let (lo, hi) = wilson_interval(0, 50, 1.96);
    assert_eq!(lo, 0.0);
    assert!((hi - 0.0713).abs() < 1e-3, "{hi}");
    assert!(wilson_interval(0, 0, 1.96).0.is_nan());
}

#[test]
fn accuracy_and_asr_conventions() {
    let labels = [0, 1, 2, 2, 1, 0];
    let preds = [0, 1, 1, 2, 0, 0];
    let ca = clean_accuracy(&preds, &labels).unwrap();
    assert_eq!((ca.hits, ca.total), (4, 6));
    // Triggered predictions: target class 2.
    let triggered = [2, 2, 2, 2, 1, 2];
    let ex = attack_success_rate(&triggered, &labels, 2, AsrConvention::ExcludeTarget).unwrap();
    assert_eq!((ex.hits, ex.total), (3, 4)); // the two class-2 images are left out
    let all = attack_success_rate(&triggered, &labels, 2, AsrConvention::All).unwrap();
    assert_eq!((all.hits, all.total), (5, 6));
    assert!(clean_accuracy(&preds[..3], &labels).is_err());
}

#[test]
fn argmax_and_resistivity() {
    let logits = Tensor::new(&[[0.1f32, 0.9, 0.0], [2.0, -1.0, 1.9]], &Device::Cpu).unwrap();
    assert_eq!(argmax_rows(&logits).unwrap(), vec![1, 0]);
    // Features unchanged (cos 1), logits rotated to orthogonal rows (cos 0 and 1 → mean 0.5).
    let f = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
    let l = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
    let l2 = Tensor::new(&[[0f32, 1.0], [0.0, 2.0]], &Device::Cpu).unwrap();
    let mut acc = ResistivityAccumulator::default();
    acc.add(&f, &f, &l, &l2).unwrap();
    let r = acc.finish();
    assert_eq!(r.samples, 2);
    assert!((r.feature_cosine - 1.0).abs() < 1e-6);
    assert!((r.logit_cosine - 0.5).abs() < 1e-6);
    assert!((r.pr - 2.0).abs() < 1e-5);
}

#[test]
fn templates_are_the_openai_80() {
    let t = rvpt::text::Templates::OpenAi80.list();
    assert_eq!(t.len(), 80);
    assert!(t.iter().all(|s| s.matches("{}").count() == 1));
    assert_eq!(
        rvpt::text::Templates::Single.list(),
        vec!["a photo of a {}."]
    );
}
