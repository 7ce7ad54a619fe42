//! The pre-norm transformer block (HF `CLIPEncoderLayer`) and the encoder, a stack of them (HF
//! `CLIPEncoder`), that both towers are built on.

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

    /// The layer restricted to output features `start..start + len` (rows of the weight).
    fn narrow_out(&self, start: usize, len: usize) -> Result<Linear> {
        let weight = self.weight.narrow(0, start, len)?;
        let bias = match &self.bias {
            Some(b) => Some(b.narrow(0, start, len)?),
            None => None,
        };
        Ok(Linear::from_parts(weight, bias))
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

    /// (weight, bias, eps): for callers that linearise the norm (the anatomy decomposition).
    pub fn parts(&self) -> (&Tensor, &Tensor, f64) {
        (&self.weight, &self.bias, self.eps)
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

/// Multi-head self-attention. q, k and v run as one matmul (q and k, v as two when only the
/// first tokens are queries).
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Qkv,
    out_proj: Linear,
    num_heads: usize,
    scale: f64,
}

/// The layers stacked along their outputs.
fn cat_linears(parts: &[&Linear]) -> Result<Linear> {
    let weights: Vec<&Tensor> = parts.iter().map(|l| &l.weight).collect();
    let biases: Option<Vec<&Tensor>> = parts.iter().map(|l| l.bias.as_ref()).collect();
    let bias = match biases {
        Some(b) => Some(Tensor::cat(&b, 0)?),
        None => None,
    };
    Ok(Linear::from_parts(Tensor::cat(&weights, 0)?, bias))
}

impl Qkv {
    /// q, k and v as one layer.
    fn all(&self) -> Result<Linear> {
        match self {
            Qkv::Fused(l) => Ok(l.clone()),
            Qkv::Separate([q, k, v]) => cat_linears(&[q, k, v]),
        }
    }

    /// q alone and k, v as one layer.
    fn q_and_kv(&self, width: usize) -> Result<(Linear, Linear)> {
        match self {
            Qkv::Fused(l) => Ok((l.narrow_out(0, width)?, l.narrow_out(width, 2 * width)?)),
            Qkv::Separate([q, k, v]) => Ok((q.clone(), cat_linears(&[k, v])?)),
        }
    }
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
            let [q, k, v] = &parts;
            Qkv::Fused(cat_linears(&[q, k, v])?)
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
        self.forward_queries(x, mask, x.dim(1)?)
    }

    /// The attention output of the first `n` tokens only, (batch, n, width): they alone are
    /// queries, every token is a key and a value. `n` = all tokens is [`Self::forward`].
    pub fn forward_queries(&self, x: &Tensor, mask: Option<&Tensor>, n: usize) -> Result<Tensor> {
        let (b, t, w) = x.dims3()?;
        let (h, d) = (self.num_heads, w / self.num_heads);
        let (q, k, v) = if n == t {
            let qkv = self
                .qkv
                .all()?
                .forward(x)?
                .reshape((b, t, 3, h, d))?
                .permute((2, 0, 3, 1, 4))?
                .contiguous()?;
            (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?)
        } else {
            let (q, kv) = self.qkv.q_and_kv(w)?;
            let q = q
                .forward(&x.narrow(1, 0, n)?)?
                .reshape((b, n, h, d))?
                .transpose(1, 2)?
                .contiguous()?;
            let kv = kv
                .forward(x)?
                .reshape((b, t, 2, h, d))?
                .permute((2, 0, 3, 1, 4))?
                .contiguous()?;
            (q, kv.get(0)?, kv.get(1)?)
        };
        let q = (q * self.scale)?;
        let scores = q.matmul(&k.t()?)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(&m.narrow(0, 0, n)?)?,
            None => scores,
        };
        let attn = ops::softmax_last_dim(&scores)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, n, w))?;
        self.out_proj.forward(&out)
    }

    /// The attention output of the first token, split by head: (batch, heads, width), head h
    /// being its weighted values through columns h·d..(h+1)·d of the output projection, plus
    /// 1/heads of its bias. The heads sum to `forward_queries(x, None, 1)`.
    pub fn first_token_per_head(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, w) = x.dims3()?;
        let (h, d) = (self.num_heads, w / self.num_heads);
        let (q, kv) = self.qkv.q_and_kv(w)?;
        let q = q.forward(&x.narrow(1, 0, 1)?)?.reshape((b, h, 1, d))?;
        let kv = kv
            .forward(x)?
            .reshape((b, t, 2, h, d))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let (k, v) = (kv.get(0)?, kv.get(1)?);
        let scores = (q * self.scale)?.matmul(&k.t()?)?;
        // (b, h, 1, d) → (h, b, d): one matmul per head with its (d, width) slice of W_o^T.
        let mixed = ops::softmax_last_dim(&scores)?
            .matmul(&v)?
            .squeeze(2)?
            .transpose(0, 1)?
            .contiguous()?;
        let w_o = self
            .out_proj
            .weight
            .t()?
            .reshape((h, d, w))?
            .to_dtype(mixed.dtype())?;
        let per_head = mixed.matmul(&w_o)?.transpose(0, 1)?;
        match &self.out_proj.bias {
            Some(bias) => per_head.broadcast_add(&(bias / h as f64)?.to_dtype(per_head.dtype())?),
            None => Ok(per_head),
        }
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
        self.forward_head(x, mask, x.dim(1)?)
    }

    /// The block's output for the first `n` tokens only, (batch, n, width), e.g. n = 1 for the
    /// [CLS] token of a last block: the other tokens still serve as keys and values, but their
    /// projections, MLP and residuals are skipped. The same values as `forward(..)[:, :n]`.
    pub fn forward_head(&self, x: &Tensor, mask: Option<&Tensor>, n: usize) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward_queries(&self.layer_norm1.forward(x)?, mask, n)?;
        let h = (x.narrow(1, 0, n)? + attn)?;
        &h + self.mlp.forward(&self.layer_norm2.forward(&h)?)?
    }

    /// The block's output for every token, with the update of the first ([CLS]) token split into
    /// its direct parts: (output (B, T, W), per-head attention (B, heads, W), MLP (B, W)).
    /// `output[:, 0] = x[:, 0] + Σ heads + MLP`.
    pub fn forward_with_first_token_parts(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let normed = self.layer_norm1.forward(x)?;
        let heads = self.self_attn.first_token_per_head(&normed)?;
        let h = (x + self.self_attn.forward(&normed, None)?)?;
        let mlp = self.mlp.forward(&self.layer_norm2.forward(&h)?)?;
        let out = (&h + &mlp)?;
        Ok((out, heads, mlp.narrow(1, 0, 1)?.squeeze(1)?))
    }
}

/// The blocks of one tower (HF `CLIPEncoder`, candle-transformers' `ClipEncoder`): the text and
/// the image tower each hold one, read from their `encoder.layers.{i}`. Any sequence length.
#[derive(Debug, Clone)]
pub struct Encoder {
    pub layers: Vec<EncoderLayer>,
}

impl Encoder {
    /// `num_layers` blocks of shape `c`, `vb` at the tower's `encoder`.
    pub fn new(vb: VarBuilder, c: &BlockConfig, num_layers: usize) -> Result<Self> {
        let vb = vb.pp("layers");
        let layers = (0..num_layers)
            .map(|i| EncoderLayer::new(vb.pp(i), c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    /// Runs every block.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        self.forward_range(x, mask, 0..self.layers.len())
    }

    /// Runs blocks `range`.
    pub fn forward_range(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        range: std::ops::Range<usize>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers[range] {
            x = layer.forward(&x, mask)?;
        }
        Ok(x)
    }

    /// The input of block 0 and the output of every block (as transformers' `hidden_states`).
    pub fn hidden_states(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Vec<Tensor>> {
        let mut states = vec![x.clone()];
        for layer in &self.layers {
            let next = layer.forward(states.last().expect("non-empty"), mask)?;
            states.push(next);
        }
        Ok(states)
    }
}
