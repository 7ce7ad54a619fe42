//! The element-wise and normalising ops of the transformer, with their own backward passes.
//!
//! candle's fused `ops::layer_norm` and `softmax_last_dim` have no backward: anything trained
//! through them silently gets no gradient. Here each op is a fused CPU kernel (f32) with a fused
//! backward kernel, and on other devices or dtypes a composition of differentiable candle ops.
//! The half dtypes compute softmax and layer norm in f32 (on the CPU through the fused kernels).
//! `tests/ops_grad.rs` checks every backward against finite differences.
//!
//! [`frozen_linear`] is different: it exists for its backward, which skips the weight gradient
//! that candle's matmul always computes, and runs as a custom op on the CPU and CUDA (through the
//! backend's storage matmul). On Metal it is composed of candle ops ([`composed_linear`]): this
//! crate has no Metal-only code, so everything the Metal build runs is also compiled and tested
//! on Linux, where candle's Metal backend cannot be built.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D,
};
use rayon::prelude::*;

/// True where the fused CPU kernels apply.
fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// True for the half dtypes, whose normalising ops are computed in f32.
fn is_half(x: &Tensor) -> bool {
    matches!(x.dtype(), DType::F16 | DType::BF16)
}

/// `op` on `x` computed in f32 and returned in `x`'s dtype: how the half dtypes run softmax and
/// layer norm (mixed precision keeps reductions in f32), and how they reach the fused CPU
/// kernels. The casts are differentiable, so gradients flow through in the half dtype.
fn in_f32(x: &Tensor, op: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    op(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("fused op expects a contiguous input"),
    }
}

fn last_dim(l: &Layout) -> Result<usize> {
    l.dims()
        .last()
        .copied()
        .ok_or_else(|| candle_core::Error::Msg("scalar input".into()))
}

// ---------------------------------------------------------------- layer norm

struct LayerNormOp {
    eps: f32,
}

/// Per row: mean and 1/std.
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "rvpt-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (slice(xs, xl)?, slice(ws, wl)?, slice(bs, bl)?);
        let d = last_dim(xl)?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(o, row)| {
                let (mean, rstd) = row_stats(row, self.eps);
                for i in 0..d {
                    o[i] = (row[i] - mean) * rstd * w[i] + b[i];
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        if !w.track_op() && !b.track_op() {
            // Frozen affine parameters: dx alone, without x̂ and the two reductions.
            let grad = LayerNormGrad {
                eps: self.eps,
                with_xhat: false,
            };
            return Ok((Some(x.apply_op3_no_bwd(w, &dy, &grad)?), None, None));
        }
        // One fused pass gives dx and the normalised input needed for dw.
        let grad = LayerNormGrad {
            eps: self.eps,
            with_xhat: true,
        };
        let both = x.apply_op3_no_bwd(w, &dy, &grad)?;
        let d = x.dim(D::Minus1)?;
        let dx = both.narrow(D::Minus1, 0, d)?;
        let xhat = both.narrow(D::Minus1, d, d)?;
        let rows = x.elem_count() / d;
        let dy2 = dy.reshape((rows, d))?;
        let dw = (dy2.clone() * xhat.reshape((rows, d))?)?.sum(0)?;
        let db = dy2.sum(0)?;
        Ok((Some(dx.contiguous()?), Some(dw), Some(db)))
    }
}

/// Backward kernel: (x, w, dy) → [dx | x̂] along the last dimension, or dx alone without
/// `with_xhat`.
struct LayerNormGrad {
    eps: f32,
    with_xhat: bool,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "rvpt-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, g) = (slice(xs, xl)?, slice(ws, wl)?, slice(gs, gl)?);
        let d = last_dim(xl)?;
        let k = if self.with_xhat { 2 } else { 1 };
        let mut out = vec![0f32; k * x.len()];
        out.par_chunks_mut(k * d)
            .zip(x.par_chunks(d).zip(g.par_chunks(d)))
            .for_each(|(o, (row, grow))| {
                let (mean, rstd) = row_stats(row, self.eps);
                let (mut mean_gw, mut mean_gw_xhat) = (0f32, 0f32);
                for i in 0..d {
                    let xhat = (row[i] - mean) * rstd;
                    let gw = grow[i] * w[i];
                    mean_gw += gw;
                    mean_gw_xhat += gw * xhat;
                }
                mean_gw /= d as f32;
                mean_gw_xhat /= d as f32;
                let (dx, rest) = o.split_at_mut(d);
                for i in 0..d {
                    let xhat = (row[i] - mean) * rstd;
                    dx[i] = rstd * (grow[i] * w[i] - mean_gw - xhat * mean_gw_xhat);
                }
                if self.with_xhat {
                    for i in 0..d {
                        rest[i] = (row[i] - mean) * rstd;
                    }
                }
            });
        let mut dims = xl.dims().to_vec();
        *dims.last_mut().expect("non-scalar") *= k;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// Layer norm over the last dimension with affine weight and bias; differentiable in all three.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if fused(x) && weight.dtype() == DType::F32 {
        let x = x.contiguous()?;
        return x.apply_op3(weight, bias, LayerNormOp { eps: eps as f32 });
    }
    if x.device().is_cpu() && is_half(x) {
        // The fused f32 kernel, with the (small) affine parameters widened too.
        let (w, b) = (weight.to_dtype(DType::F32)?, bias.to_dtype(DType::F32)?);
        return in_f32(x, |x| layer_norm(x, &w, &b, eps));
    }
    // Composed path (GPU, other dtypes): half-precision statistics are computed in f32.
    let dtype = x.dtype();
    let stat_dtype = if is_half(x) { DType::F32 } else { dtype };
    let x = x.to_dtype(stat_dtype)?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    xhat.to_dtype(dtype)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

// ---------------------------------------------------------------- softmax

struct SoftmaxOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "rvpt-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let d = last_dim(l)?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(o, row)| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for i in 0..d {
                    o[i] = (row[i] - max).exp();
                    sum += o[i];
                }
                for v in o.iter_mut() {
                    *v /= sum;
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&dy.contiguous()?, &SoftmaxGrad)?))
    }
}

/// dx = y * (dy - Σ dy·y), per row.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "rvpt-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (slice(ys, yl)?, slice(gs, gl)?);
        let d = last_dim(yl)?;
        let mut out = vec![0f32; y.len()];
        out.par_chunks_mut(d)
            .zip(y.par_chunks(d).zip(g.par_chunks(d)))
            .for_each(|(o, (yr, gr))| {
                let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                for i in 0..d {
                    o[i] = yr[i] * (gr[i] - dot);
                }
            });
        Ok((CpuStorage::F32(out), yl.shape().clone()))
    }
}

/// Softmax over the last dimension, in f32 for the half dtypes; differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        return x.contiguous()?.apply_op1(SoftmaxOp);
    }
    if is_half(x) {
        return in_f32(x, softmax_last_dim);
    }
    candle_nn::ops::softmax(x, D::Minus1)
}

// ---------------------------------------------------------------- quick_gelu

struct QuickGeluOp;

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

impl CustomOp1 for QuickGeluOp {
    fn name(&self) -> &'static str {
        "rvpt-quick-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(4096)
            .zip(x.par_chunks(4096))
            .for_each(|(o, xs)| {
                for (o, &v) in o.iter_mut().zip(xs) {
                    *o = v * sigmoid(1.702 * v);
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &QuickGeluGrad)?))
    }
}

/// d/dx [x σ(1.702x)] = σ + 1.702 x σ (1 - σ).
struct QuickGeluGrad;

impl CustomOp2 for QuickGeluGrad {
    fn name(&self) -> &'static str {
        "rvpt-quick-gelu-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(xs, xl)?, slice(gs, gl)?);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(4096)
            .zip(x.par_chunks(4096).zip(g.par_chunks(4096)))
            .for_each(|(o, (xs, gs))| {
                for ((o, &v), &g) in o.iter_mut().zip(xs).zip(gs) {
                    let s = sigmoid(1.702 * v);
                    *o = g * (s + 1.702 * v * s * (1.0 - s));
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// OpenAI's GELU approximation: x * sigmoid(1.702 x); differentiable.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        return x.contiguous()?.apply_op1(QuickGeluOp);
    }
    if x.device().is_cpu() && is_half(x) {
        // The fused kernel beats candle's element-wise half ops on the CPU, casts included.
        return in_f32(x, quick_gelu);
    }
    x * candle_nn::ops::sigmoid(&(x * 1.702)?)?
}

// ---------------------------------------------------------------- frozen linear

/// `x` (…, in) as a (rows, in) matrix and the (rows, out) output shape, for `w` (out, in).
fn linear_dims(xl: &Layout, wl: &Layout) -> Result<(usize, usize, usize, Shape)> {
    let (out_dim, in_dim) = wl.shape().dims2()?;
    let x_in = last_dim(xl)?;
    if x_in != in_dim {
        bail!(
            "frozen linear: input {:?} does not match weight {:?}",
            xl.dims(),
            wl.dims()
        );
    }
    if !xl.is_contiguous() {
        bail!("frozen linear expects a contiguous input");
    }
    let rows = xl.shape().elem_count() / in_dim;
    let mut dims = xl.dims().to_vec();
    *dims.last_mut().expect("non-scalar") = out_dim;
    Ok((rows, in_dim, out_dim, Shape::from(dims)))
}

/// x Wᵀ through the backend's own matmul (any device), and x Wᵀ + b when `b` is given.
fn linear_fwd<S: BackendStorage>(
    x: &S,
    xl: &Layout,
    w: &S,
    wl: &Layout,
    b: Option<(&S, &Layout)>,
) -> Result<(S, Shape)> {
    let (rows, in_dim, out_dim, shape) = linear_dims(xl, wl)?;
    // The layouts `x.reshape((rows, in)).matmul(&w.t())` would pass.
    let x2 = Layout::contiguous_with_offset((rows, in_dim), xl.start_offset());
    let y = x.matmul(w, (1, rows, out_dim, in_dim), &x2, &wl.transpose(0, 1)?)?;
    let y = match b {
        None => y,
        Some((b, bl)) => {
            let yl = Layout::contiguous((rows, out_dim));
            y.binary_impl::<candle_core::op::Add>(b, &yl, &bl.broadcast_as((rows, out_dim))?)?
        }
    };
    Ok((y, shape))
}

/// The CPU forward: as [`linear_fwd`], with the bias added in place for f32.
fn linear_cpu(
    x: &CpuStorage,
    xl: &Layout,
    w: &CpuStorage,
    wl: &Layout,
    b: Option<(&CpuStorage, &Layout)>,
) -> Result<(CpuStorage, Shape)> {
    match b {
        Some((bs, bl)) if x.dtype() == DType::F32 && bs.dtype() == DType::F32 => {
            let (y, shape) = linear_fwd(x, xl, w, wl, None)?;
            let mut y = match y {
                CpuStorage::F32(y) => y,
                _ => bail!("frozen linear: f32 matmul gave another dtype"),
            };
            let bias = slice(bs, bl)?;
            y.par_chunks_mut(bias.len()).for_each(|row| {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            });
            Ok((CpuStorage::F32(y), shape))
        }
        _ => linear_fwd(x, xl, w, wl, b),
    }
}

/// dL/dx = dL/dy W, shaped as `x`.
fn linear_input_grad(x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let (out_dim, _) = w.dims2()?;
    let rows = dy.elem_count() / out_dim;
    dy.reshape((rows, out_dim))?.matmul(w)?.reshape(x.shape())
}

/// y = x Wᵀ for a frozen W.
struct FrozenLinear;

impl CustomOp2 for FrozenLinear {
    fn name(&self) -> &'static str {
        "rvpt-frozen-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        linear_cpu(xs, xl, ws, wl, None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        linear_fwd(xs, xl, ws, wl, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(linear_input_grad(x, w, dy)?), None))
    }
}

/// y = x Wᵀ + b for a frozen W and b.
struct FrozenLinearBias;

impl CustomOp3 for FrozenLinearBias {
    fn name(&self) -> &'static str {
        "rvpt-frozen-linear-bias"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        linear_cpu(xs, xl, ws, wl, Some((bs, bl)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        linear_fwd(xs, xl, ws, wl, Some((bs, bl)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Ok((Some(linear_input_grad(x, w, dy)?), None, None))
    }
}

/// y = x Wᵀ + b over the last dimension of `x` (…, in), for W (out, in) and b (out): the forward
/// of a linear layer, whose backward gives dL/dx only and never dL/dW or dL/db (candle's matmul
/// computes both operand gradients, a second matmul as large as the forward). Only for weights
/// that are not trained: refuses a `weight` or `bias` that carries gradient (a `Var` or a
/// tensor computed from one).
pub fn frozen_linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if weight.track_op() || bias.is_some_and(|b| b.track_op()) {
        bail!("frozen_linear: the weight or bias is trained; use a differentiable matmul");
    }
    if let Some(b) = bias {
        if b.dims() != [weight.dim(0)?] {
            bail!(
                "frozen_linear: bias {:?} for weight {:?}",
                b.dims(),
                weight.dims()
            );
        }
    }
    if !custom_linear_on(&x.device().location()) {
        return composed_linear(x, weight, bias);
    }
    let x = x.contiguous()?;
    match bias {
        Some(b) => x.apply_op3(weight, b, FrozenLinearBias),
        None => x.apply_op2(weight, FrozenLinear),
    }
}

/// Where [`frozen_linear`] runs as its custom op: the CPU and CUDA, which it has kernels for.
/// Metal takes [`composed_linear`]: the op has no Metal body, which could not be compiled here.
pub fn custom_linear_on(location: &candle_core::DeviceLocation) -> bool {
    use candle_core::DeviceLocation;
    match location {
        DeviceLocation::Cpu | DeviceLocation::Cuda { .. } => true,
        DeviceLocation::Metal { .. } => false,
    }
}

/// x Wᵀ + b through candle's differentiable ops: the same values as [`frozen_linear`], but its
/// backward also computes the (unused) weight gradient; the path on devices without the op.
pub fn composed_linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let y = x.broadcast_matmul(&weight.t()?)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// Exact (erf) GELU, as transformers' `gelu`.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

/// Cosine similarity of matching rows of two (N, D) tensors: (N,).
pub fn cosine_rows(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dot = (a * b)?.sum(D::Minus1)?;
    let na = a.sqr()?.sum(D::Minus1)?.sqrt()?;
    let nb = b.sqr()?.sum(D::Minus1)?.sqrt()?;
    dot / (na * nb)?
}

/// Rows scaled to unit L2 norm.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    x.broadcast_div(&norm)
}
