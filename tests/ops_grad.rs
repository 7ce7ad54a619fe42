//! Every fused op's forward and backward against (1) the composed candle ops in f64 and (2)
//! central finite differences of the f64 path. A prompt trained through an op without a backward
//! gets no gradient, silently: these tests are the guard.

use candle_core::{DType, Device, Tensor, Var, D};
use rvpt::model::ops;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // Deterministic pseudo-random values without depending on candle's global RNG.
    let n: usize = shape.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f64> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Gradient of sum(f(x) * probe) w.r.t. `inputs`, for dtype f32 (fused) or f64 (composed).
fn grads(
    f: &dyn Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    probe: &Tensor,
    dtype: DType,
) -> Vec<Tensor> {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let loss = (f(&ts) * probe.to_dtype(dtype).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let g = loss.backward().unwrap();
    vars.iter()
        .map(|v| {
            g.get(v.as_tensor())
                .expect("every input gets a gradient")
                .clone()
        })
        .collect()
}

/// Checks fused-f32 gradients = composed-f64 gradients = finite differences (f64).
fn check(name: &str, f: &dyn Fn(&[Tensor]) -> Tensor, inputs: Vec<Tensor>) {
    let out = f(&inputs);
    let probe = randn(out.dims(), 99);
    // Forward: fused f32 vs composed f64.
    let f32_in: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.to_dtype(DType::F32).unwrap())
        .collect();
    let fwd_err = max_diff(&f(&f32_in), &out);
    assert!(fwd_err < 1e-5, "{name}: forward differs by {fwd_err}");

    let fused = grads(f, &inputs, &probe, DType::F32);
    let exact = grads(f, &inputs, &probe, DType::F64);
    for (i, (a, b)) in fused.iter().zip(&exact).enumerate() {
        let err = max_diff(a, b);
        println!("{name}: input {i}: fused f32 vs composed f64 gradient max abs {err:.2e}");
        assert!(err < 1e-4, "{name}: gradient of input {i} differs by {err}");
    }
    // Finite differences on a few coordinates of each input, on the f64 path.
    let h = 1e-5;
    for (i, x) in inputs.iter().enumerate() {
        let flat: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
        let g: Vec<f64> = exact[i].flatten_all().unwrap().to_vec1().unwrap();
        for k in [0, flat.len() / 3, flat.len() - 1] {
            let eval = |delta: f64| {
                let mut v = flat.clone();
                v[k] += delta;
                let mut ins = inputs.clone();
                ins[i] = Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap();
                (f(&ins) * &probe)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h);
            assert!(
                (fd - g[k]).abs() < 1e-6 * (1.0 + fd.abs()),
                "{name}: input {i}[{k}]: fd {fd} vs autograd {}",
                g[k]
            );
        }
    }
}

#[test]
fn layer_norm_backward() {
    let f = |t: &[Tensor]| ops::layer_norm(&t[0], &t[1], &t[2], 1e-5).unwrap();
    check(
        "layer_norm",
        &f,
        vec![randn(&[3, 5, 16], 1), randn(&[16], 2), randn(&[16], 3)],
    );
}

#[test]
fn softmax_backward() {
    let f = |t: &[Tensor]| ops::softmax_last_dim(&t[0]).unwrap();
    check("softmax", &f, vec![randn(&[2, 3, 7, 7], 4)]);
}

#[test]
fn quick_gelu_backward() {
    let f = |t: &[Tensor]| ops::quick_gelu(&t[0]).unwrap();
    check("quick_gelu", &f, vec![randn(&[4, 33], 5)]);
}

#[test]
fn fused_forward_matches_candle_kernels() {
    let x = randn(&[4, 10, 32], 6).to_dtype(DType::F32).unwrap();
    let w = randn(&[32], 7).to_dtype(DType::F32).unwrap();
    let b = randn(&[32], 8).to_dtype(DType::F32).unwrap();
    let ours = ops::layer_norm(&x, &w, &b, 1e-5).unwrap();
    let theirs = candle_nn::ops::layer_norm(&x, &w, &b, 1e-5).unwrap();
    assert!(max_diff(&ours, &theirs) < 1e-5);
    let ours = ops::softmax_last_dim(&x).unwrap();
    let theirs = candle_nn::ops::softmax(&x, D::Minus1).unwrap();
    assert!(max_diff(&ours, &theirs) < 1e-6);
}
