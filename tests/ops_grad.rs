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

#[test]
fn frozen_linear_backward() {
    // dL/dx of the frozen linear (the weight and bias are constants here, not inputs) against the
    // f64 path and finite differences: 3-D input, with and without bias, and a strided input.
    let w = randn(&[6, 8], 10);
    let b = randn(&[6], 11);
    let with_bias = |t: &[Tensor]| {
        let dtype = t[0].dtype();
        let (w, b) = (w.to_dtype(dtype).unwrap(), b.to_dtype(dtype).unwrap());
        ops::frozen_linear(&t[0], &w, Some(&b)).unwrap()
    };
    check("frozen_linear", &with_bias, vec![randn(&[2, 5, 8], 12)]);
    let no_bias = |t: &[Tensor]| {
        let w = w.to_dtype(t[0].dtype()).unwrap();
        ops::frozen_linear(&t[0], &w, None).unwrap()
    };
    check(
        "frozen_linear (no bias)",
        &no_bias,
        vec![randn(&[7, 8], 13)],
    );
    let strided = |t: &[Tensor]| with_bias(&[t[0].transpose(0, 1).unwrap()]);
    check(
        "frozen_linear (strided)",
        &strided,
        vec![randn(&[5, 3, 8], 14)],
    );
}

#[test]
fn frozen_linear_matches_the_differentiable_linear() {
    // Same forward and dL/dx as x Wᵀ + b through candle's matmul, in f32 (bias added in place)
    // and f64 (the backend's generic add); W and b get no gradient, and trained ones are refused.
    for dtype in [DType::F32, DType::F64] {
        let x = Var::from_tensor(&randn(&[3, 4, 8], 20).to_dtype(dtype).unwrap()).unwrap();
        let w = randn(&[6, 8], 21).to_dtype(dtype).unwrap();
        let b = randn(&[6], 22).to_dtype(dtype).unwrap();
        let probe = randn(&[3, 4, 6], 23).to_dtype(dtype).unwrap();
        let y = ops::frozen_linear(x.as_tensor(), &w, Some(&b)).unwrap();
        let g = (&y * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&w).is_none() && g.get(&b).is_none());

        let (wv, bv) = (Var::from_tensor(&w).unwrap(), Var::from_tensor(&b).unwrap());
        let y2 = x
            .as_tensor()
            .broadcast_matmul(&wv.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(bv.as_tensor())
            .unwrap();
        let g2 = (&y2 * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(max_diff(&y, &y2) < 1e-5, "{dtype:?}: forward");
        let (gx, gx2) = (
            g.get(x.as_tensor()).unwrap(),
            g2.get(x.as_tensor()).unwrap(),
        );
        assert!(max_diff(gx, gx2) < 1e-5, "{dtype:?}: input gradient");
        assert!(g2.get(wv.as_tensor()).is_some(), "the reference trains W");

        assert!(ops::frozen_linear(x.as_tensor(), wv.as_tensor(), Some(&b)).is_err());
        assert!(ops::frozen_linear(x.as_tensor(), &w, Some(bv.as_tensor())).is_err());
        assert!(ops::frozen_linear(x.as_tensor(), &w, Some(&w)).is_err());
    }
}

#[test]
fn frozen_layer_norm_gives_the_same_input_gradient() {
    // Frozen weight and bias take the dx-only backward kernel: the same dx as the full one.
    let x = Var::from_tensor(&randn(&[3, 5, 16], 30).to_dtype(DType::F32).unwrap()).unwrap();
    let w = randn(&[16], 31).to_dtype(DType::F32).unwrap();
    let b = randn(&[16], 32).to_dtype(DType::F32).unwrap();
    let probe = randn(&[3, 5, 16], 33).to_dtype(DType::F32).unwrap();
    let dx = |w: &Tensor, b: &Tensor| {
        let y = ops::layer_norm(x.as_tensor(), w, b, 1e-5).unwrap();
        let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        (g.get(x.as_tensor()).unwrap().clone(), g.get(w).is_some())
    };
    let (frozen, frozen_w_grad) = dx(&w, &b);
    let (wv, bv) = (Var::from_tensor(&w).unwrap(), Var::from_tensor(&b).unwrap());
    let (trained, trained_w_grad) = dx(wv.as_tensor(), bv.as_tensor());
    assert!(!frozen_w_grad && trained_w_grad);
    assert!(max_diff(&frozen, &trained) < 1e-6);
}

#[test]
fn clip_vars_model_trains_every_parameter() {
    // `ClipVars::model` (contrastive pretraining and the attack) keeps the differentiable linear:
    // every parameter gets a non-zero gradient from the CLIP loss.
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/config.json");
    let cfg = rvpt::model::ClipConfig::from_file(&path).unwrap();
    let vars = rvpt::model::init::ClipVars::init(&cfg, 0, &Device::Cpu).unwrap();
    let model = vars.model().unwrap();
    let v = &cfg.vision_config;
    let pixels = randn(&[2, v.num_channels, v.image_size, v.image_size], 40)
        .to_dtype(DType::F32)
        .unwrap();
    let t = &cfg.text_config;
    let ids: Vec<u32> = (0..2 * 7).map(|i| (i * 13 % t.vocab_size) as u32).collect();
    let ids = Tensor::from_vec(ids, (2, 7), &Device::Cpu).unwrap();
    let loss = rvpt::train::contrastive::clip_loss(
        &model.image_embeds(&pixels).unwrap(),
        &model.text_embeds(&ids).unwrap(),
        vars.get("logit_scale").unwrap().as_tensor(),
    )
    .unwrap();
    let grads = loss.backward().unwrap();
    for (name, var) in &vars.vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} gets no gradient"));
        let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(norm > 0.0, "{name} gets a zero gradient");
    }
}

#[test]
fn block_head_equals_the_full_block() {
    // forward_head(x, mask, n) = forward(x, mask)[:, :n], with the same input gradient: an image
    // block (no mask) and a text block (causal mask), frozen weights and trained ones.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny");
    let cfg = rvpt::model::ClipConfig::from_file(&dir.join("config.json")).unwrap();
    let frozen = rvpt::model::load_clip(
        &dir.join("model.safetensors"),
        Some(cfg.clone()),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let vars = rvpt::model::init::ClipVars::init(&cfg, 1, &Device::Cpu).unwrap();
    let trained = vars.model().unwrap();
    let t = 6;
    let causal: Vec<f32> = (0..t * t)
        .map(|i| {
            if i % t > i / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let causal = Tensor::from_vec(causal, (t, t), &Device::Cpu).unwrap();
    for (model, kind) in [(&frozen, "frozen"), (&trained, "trained")] {
        let cases = [
            (
                &model.vision.encoder.layers[0],
                cfg.vision_config.hidden_size,
                None,
            ),
            (
                &model.text.encoder.layers[0],
                cfg.text_config.hidden_size,
                Some(&causal),
            ),
        ];
        for (block, width, mask) in cases {
            let x = randn(&[2, t, width], 50).to_dtype(DType::F32).unwrap();
            let x = Var::from_tensor(&x).unwrap();
            for n in [1, 3] {
                let probe = randn(&[2, n, width], 51).to_dtype(DType::F32).unwrap();
                let dx = |y: Tensor| {
                    let g = (&y * &probe)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap();
                    (y, g.get(x.as_tensor()).unwrap().clone())
                };
                let (head, head_dx) = dx(block.forward_head(x.as_tensor(), mask, n).unwrap());
                let full = block.forward(x.as_tensor(), mask).unwrap();
                let (full, full_dx) = dx(full.narrow(1, 0, n).unwrap());
                let (e, ge) = (max_diff(&head, &full), max_diff(&head_dx, &full_dx));
                assert!(
                    e < 1e-5 && ge < 1e-5,
                    "{kind}, n = {n}: {e:.1e}, dx {ge:.1e}"
                );
            }
        }
    }
}

type UnaryOp<'a> = dyn Fn(&Tensor) -> Tensor + 'a;

/// Mixed precision: in bf16 and f16, softmax, layer norm and QuickGELU are computed in f32 and
/// rounded once, so they equal the f32 op on the same (half-representable) input, rounded; their
/// gradients reach a half-precision input.
#[test]
fn half_dtypes_normalise_in_f32() {
    for dtype in [DType::BF16, DType::F16] {
        let x = randn(&[3, 5, 16], 11).to_dtype(dtype).unwrap();
        let w = randn(&[16], 12).to_dtype(dtype).unwrap();
        let b = randn(&[16], 13).to_dtype(dtype).unwrap();
        let wide = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let cases: [(&str, Box<UnaryOp<'_>>); 3] = [
            ("softmax", Box::new(|x| ops::softmax_last_dim(x).unwrap())),
            (
                "layer_norm",
                Box::new(|x| {
                    let (w, b) = (
                        w.to_dtype(x.dtype()).unwrap(),
                        b.to_dtype(x.dtype()).unwrap(),
                    );
                    ops::layer_norm(x, &w, &b, 1e-5).unwrap()
                }),
            ),
            ("quick_gelu", Box::new(|x| ops::quick_gelu(x).unwrap())),
        ];
        for (name, f) in &cases {
            let half = f(&x);
            assert_eq!(half.dtype(), dtype, "{name}");
            let reference = f(&wide(&x)).to_dtype(dtype).unwrap();
            assert_eq!(max_diff(&half, &reference), 0.0, "{name} {dtype:?}");
            let v = Var::from_tensor(&x).unwrap();
            let probe = randn(&[3, 5, 16], 14).to_dtype(dtype).unwrap();
            let loss = wide(&(f(v.as_tensor()) * &probe).unwrap())
                .sum_all()
                .unwrap();
            let g = loss.backward().unwrap();
            let g = g.get(v.as_tensor()).expect("no gradient");
            assert_eq!(g.dtype(), dtype);
            let norm: f64 = wide(g)
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{name} {dtype:?}: |grad| {norm}"
            );
        }
    }
}

#[test]
fn metal_takes_the_composed_linear_which_equals_the_custom_op() {
    // Metal cannot be built on Linux, so its path is checked through what decides it: a Metal
    // location gets the composed linear, and the composed linear gives the custom op's forward
    // and input gradient (here on the CPU, where both run).
    use candle_core::DeviceLocation;
    assert!(!ops::custom_linear_on(&DeviceLocation::Metal { gpu_id: 0 }));
    assert!(ops::custom_linear_on(&DeviceLocation::Cpu));
    assert!(ops::custom_linear_on(&DeviceLocation::Cuda { gpu_id: 0 }));
    let x = Var::from_tensor(&randn(&[3, 4, 8], 40).to_dtype(DType::F32).unwrap()).unwrap();
    let w = randn(&[6, 8], 41).to_dtype(DType::F32).unwrap();
    let b = randn(&[6], 42).to_dtype(DType::F32).unwrap();
    let probe = randn(&[3, 4, 6], 43).to_dtype(DType::F32).unwrap();
    for bias in [Some(&b), None] {
        let input_grad = |y: &Tensor| {
            let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            g.get(x.as_tensor()).unwrap().clone()
        };
        let fused = ops::frozen_linear(x.as_tensor(), &w, bias).unwrap();
        let composed = ops::composed_linear(x.as_tensor(), &w, bias).unwrap();
        assert!(max_diff(&fused, &composed) < 1e-5, "forward");
        assert!(
            max_diff(&input_grad(&fused), &input_grad(&composed)) < 1e-5,
            "input gradient"
        );
    }
}
