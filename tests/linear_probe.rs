//! Linear Probe does what its paper says: SGD on a linear head over frozen embeddings reaches
//! the accuracy of the closed-form least-squares probe on a separable toy set.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rvpt::defences::linear_probe::{fit, LinearProbeConfig};

const CLASSES: usize = 10;
const DIM: usize = 16;

/// Unit rows around one random unit mean per class (noise `sigma` per coordinate).
fn clusters(
    means: &[Vec<f64>],
    per_class: usize,
    sigma: f64,
    rng: &mut ChaCha8Rng,
) -> (Vec<Vec<f64>>, Vec<usize>) {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..per_class {
        for (c, m) in means.iter().enumerate() {
            let v: Vec<f64> = m
                .iter()
                .map(|&mu| mu + sigma * rng.sample::<f64, _>(StandardNormal))
                .collect();
            let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            x.push(v.iter().map(|a| a / n).collect());
            y.push(c);
        }
    }
    (x, y)
}

/// Least squares onto one-hot targets with a bias column (tiny ridge for conditioning), by
/// Gauss-Jordan elimination on the normal equations. Returns (DIM + 1, CLASSES).
fn least_squares(x: &[Vec<f64>], y: &[usize]) -> Vec<Vec<f64>> {
    let d = DIM + 1;
    let rows: Vec<Vec<f64>> = x
        .iter()
        .map(|r| r.iter().copied().chain([1.0]).collect())
        .collect();
    let mut a = vec![vec![0.0; d + CLASSES]; d];
    for (r, &label) in rows.iter().zip(y) {
        for i in 0..d {
            for j in 0..d {
                a[i][j] += r[i] * r[j];
            }
            a[i][d + label] += r[i];
        }
    }
    for (i, row) in a.iter_mut().enumerate() {
        row[i] += 1e-6;
    }
    for col in 0..d {
        let pivot = (col..d)
            .max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))
            .unwrap();
        a.swap(col, pivot);
        let p = a[col][col];
        for v in a[col].iter_mut() {
            *v /= p;
        }
        for r in 0..d {
            if r != col {
                let f = a[r][col];
                let pivot_row = a[col].clone();
                for (v, pv) in a[r].iter_mut().zip(pivot_row) {
                    *v -= f * pv;
                }
            }
        }
    }
    a.iter().map(|row| row[d..].to_vec()).collect()
}

fn accuracy(pred: impl Fn(&[f64]) -> usize, x: &[Vec<f64>], y: &[usize]) -> f64 {
    x.iter().zip(y).filter(|(r, &l)| pred(r) == l).count() as f64 / y.len() as f64
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap()
}

#[test]
fn sgd_probe_reaches_the_least_squares_probe() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let means: Vec<Vec<f64>> = (0..CLASSES)
        .map(|_| {
            let v: Vec<f64> = (0..DIM).map(|_| rng.sample(StandardNormal)).collect();
            let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            v.iter().map(|a| a / n).collect()
        })
        .collect();
    // 16 shots per class, as the defence gets; the test set is separate.
    let (xtr, ytr) = clusters(&means, 16, 0.25, &mut rng);
    let (xte, yte) = clusters(&means, 100, 0.25, &mut rng);

    let ls = least_squares(&xtr, &ytr);
    let ls_predict = |r: &[f64]| {
        let scores: Vec<f64> = (0..CLASSES)
            .map(|c| (0..DIM).map(|i| r[i] * ls[i][c]).sum::<f64>() + ls[DIM][c])
            .collect();
        argmax(&scores)
    };
    let ls_acc = accuracy(ls_predict, &xte, &yte);

    let flat: Vec<f32> = xtr.iter().flatten().map(|&v| v as f32).collect();
    let x = Tensor::from_vec(flat, (xtr.len(), DIM), &Device::Cpu).unwrap();
    let head = fit(&x, &ytr, CLASSES, &LinearProbeConfig::default()).unwrap();
    let w: Vec<Vec<f32>> = head.weight.to_vec2().unwrap();
    let b: Vec<f32> = head.bias.to_vec1().unwrap();
    let sgd_predict = |r: &[f64]| {
        let scores: Vec<f64> = (0..CLASSES)
            .map(|c| (0..DIM).map(|i| r[i] * w[c][i] as f64).sum::<f64>() + b[c] as f64)
            .collect();
        argmax(&scores)
    };
    let sgd_acc = accuracy(sgd_predict, &xte, &yte);
    eprintln!("least squares {ls_acc:.3}, SGD probe {sgd_acc:.3}");
    assert!(ls_acc > 0.9, "the toy set should be separable: {ls_acc}");
    assert!(
        sgd_acc >= ls_acc - 0.01,
        "SGD probe {sgd_acc} < least squares {ls_acc}"
    );
}

#[test]
fn probe_refuses_mismatched_input() {
    let x = Tensor::zeros((4, DIM), candle_core::DType::F32, &Device::Cpu).unwrap();
    let cfg = LinearProbeConfig::default();
    assert!(fit(&x, &[0, 1, 2], CLASSES, &cfg).is_err());
    let err = fit(&x, &[0, 1, 2, 10], CLASSES, &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("label 10"), "{err}");
    let zero = LinearProbeConfig {
        epochs: 0,
        ..LinearProbeConfig::default()
    };
    assert!(fit(&x, &[0, 1, 2, 3], CLASSES, &zero).is_err());
}
