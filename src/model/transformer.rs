//! The pre-norm transformer block shared by both towers (HF `CLIPEncoderLayer`).

use super::config::Activation;
use super::ops;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// y = x W^T + b, computed as one 2-D matmul over all leading dimensions.
///
/// A frozen layer (weight and bias plain tensors, not `Var`s being trained) runs as
/// [`ops::frozen_linear`], whose backward computes only the input gradient; a trained one (e.g.
/// [`ClipVars::model`](super::init::ClipVars::model)) as a differentiable matmul, so its `Var`s
/// get their gradients.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// True when the weight or the bias carries gradient (a `Var`, or computed from one).
    pub fn is_trained(&self) -> bool {
        self.weight.track_op() || self.bias.as_ref().is_some_and(|b| b.track_op())
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.is_trained() {
            return ops::frozen_linear(x, &self.weight, self.bias.as_ref());
        }
        let dims = x.dims();
        let in_dim = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = x.reshape((rows, in_dim))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims.to_vec();
        *out_dims
            .last_mut()
            .expect("linear input has a last dimension") = self.weight.dim(0)?;
        y.reshape(out_dims)
    }
}

/// Affine layer norm over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// q, k and v as one (3 width, width) projection.
#[derive(Debug, Clone)]
enum Qkv {
    /// Frozen weights: concatenated once, at construction.
    Fused(Linear),
    /// Trained weights: concatenated at each forward, so that the `Var`s stay the single source
    /// of truth (an optimizer updates them in place).
    Separate([Linear; 3]),
}

/// Multi-head self-attention. q, k and v run as one matmul.
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Qkv,
    out_proj: Linear,
    num_heads: usize,
    scale: f64,
}

fn cat_linears(parts: &[Linear; 3]) -> Result<Linear> {
    let [q, k, v] = parts;
    let weight = Tensor::cat(&[&q.weight, &k.weight, &v.weight], 0)?;
    let bias = match (&q.bias, &k.bias, &v.bias) {
        (Some(q), Some(k), Some(v)) => Some(Tensor::cat(&[q, k, v], 0)?),
        _ => None,
    };
    Ok(Linear::from_parts(weight, bias))
}

impl Attention {
    pub fn new(vb: VarBuilder, width: usize, num_heads: usize) -> Result<Self> {
        let head_dim = width / num_heads;
        let parts = [
            Linear::new(vb.pp("q_proj"), width, width, true)?,
            Linear::new(vb.pp("k_proj"), width, width, true)?,
            Linear::new(vb.pp("v_proj"), width, width, true)?,
        ];
        let qkv = if parts.iter().any(Linear::is_trained) {
            Qkv::Separate(parts)
        } else {
            Qkv::Fused(cat_linears(&parts)?)
        };
        Ok(Self {
            qkv,
            out_proj: Linear::new(vb.pp("out_proj"), width, width, true)?,
            num_heads,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    /// `x`: (batch, tokens, width); `mask`: additive (tokens, tokens), e.g. causal for text.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, w) = x.dims3()?;
        let (h, d) = (self.num_heads, w / self.num_heads);
        let qkv = match &self.qkv {
            Qkv::Fused(l) => l.forward(x)?,
            Qkv::Separate(parts) => cat_linears(parts)?.forward(x)?,
        };
        let qkv = qkv
            .reshape((b, t, 3, h, d))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let q = (qkv.get(0)? * self.scale)?;
        let k = qkv.get(1)?;
        let v = qkv.get(2)?;
        let scores = q.matmul(&k.t()?)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let attn = ops::softmax_last_dim(&scores)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, t, w))?;
        self.out_proj.forward(&out)
    }
}

/// fc1 → activation → fc2.
#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl Mlp {
    pub fn new(
        vb: VarBuilder,
        width: usize,
        hidden: usize,
        activation: Activation,
    ) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(vb.pp("fc1"), width, hidden, true)?,
            fc2: Linear::new(vb.pp("fc2"), hidden, width, true)?,
            activation,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.fc1.forward(x)?;
        let x = match self.activation {
            Activation::QuickGelu => ops::quick_gelu(&x)?,
            Activation::Gelu => ops::gelu(&x)?,
        };
        self.fc2.forward(&x)
    }
}

/// Shape of one block, shared by both towers.
#[derive(Debug, Clone, Copy)]
pub struct BlockConfig {
    pub width: usize,
    pub intermediate: usize,
    pub num_heads: usize,
    pub activation: Activation,
    pub eps: f64,
}

/// x + attn(ln1(x)), then + mlp(ln2(x)). Any sequence length: prompt tokens may be appended.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: Attention,
    layer_norm2: LayerNorm,
    mlp: Mlp,
}

impl EncoderLayer {
    pub fn new(vb: VarBuilder, c: &BlockConfig) -> Result<Self> {
        Ok(Self {
            layer_norm1: LayerNorm::new(vb.pp("layer_norm1"), c.width, c.eps)?,
            self_attn: Attention::new(vb.pp("self_attn"), c.width, c.num_heads)?,
            layer_norm2: LayerNorm::new(vb.pp("layer_norm2"), c.width, c.eps)?,
            mlp: Mlp::new(vb.pp("mlp"), c.width, c.intermediate, c.activation)?,
        })
    }

    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let h = (x + self
            .self_attn
            .forward(&self.layer_norm1.forward(x)?, mask)?)?;
        &h + self.mlp.forward(&self.layer_norm2.forward(&h)?)?
    }
}
