//! The direct-effect decomposition of an image embedding (Gandelsman et al., ICLR 2024; He et al.,
//! ICML 2025). The [CLS] token's final state is a sum: its input (class + position embedding
//! after the pre-norm) plus what every attention head and every MLP wrote into it. The final
//! layer norm is linearised with each image's own statistics (mean and spread of the whole
//! [CLS] state), so each part passes through it and the projection on its own, and the parts
//! sum to the real image embedding.

use crate::error::Result;
use crate::model::vision::VisionTransformer;
use crate::train::rvpt::DeepPrompts;
use candle_core::{DType, Tensor, D};
use serde::Serialize;

/// One direct contributor to the image embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Component {
    /// [CLS] + its position embedding after the pre-norm: the start of the residual stream.
    Input,
    /// The final layer norm's bias (the same vector for every image).
    FinalNormBias,
    /// Attention head `head` of block `layer` (with 1/heads of the output projection's bias).
    Head { layer: usize, head: usize },
    /// The MLP of block `layer`.
    Mlp { layer: usize },
}

impl Component {
    pub fn layer(&self) -> Option<usize> {
        match self {
            Component::Head { layer, .. } | Component::Mlp { layer } => Some(*layer),
            _ => None,
        }
    }

    /// "input", "final-norm bias", "L11.H3", "L9.MLP".
    pub fn name(&self) -> String {
        match self {
            Component::Input => "input".into(),
            Component::FinalNormBias => "final-norm bias".into(),
            Component::Head { layer, head } => format!("L{layer}.H{head}"),
            Component::Mlp { layer } => format!("L{layer}.MLP"),
        }
    }
}

/// The components in the order of [`Decomposition::parts`]: input, final-norm bias, then for
/// every block its heads and its MLP.
pub fn components(layers: usize, heads: usize) -> Vec<Component> {
    let mut out = vec![Component::Input, Component::FinalNormBias];
    for layer in 0..layers {
        out.extend((0..heads).map(|head| Component::Head { layer, head }));
        out.push(Component::Mlp { layer });
    }
    out
}

pub struct Decomposition {
    /// (B, components, projection_dim), f32: each component's direct contribution to the
    /// (unnormalised) image embedding, in the order of [`components`].
    pub parts: Tensor,
    /// (B, projection_dim), f32: the image embedding of the same forward pass, computed the
    /// ordinary way (final norm of [CLS], then projection).
    pub embeds: Tensor,
}

/// Decomposes the image embeddings of normalised `pixels` (B, C, S, S). `projection` is the image
/// projection's weight (projection_dim, width). With `prompts`, their tokens join the sequence
/// of every prompted block (VPT-deep), as in the prompted encoder: the parts are then those of
/// the defended model.
pub fn decompose(
    vision: &VisionTransformer,
    projection: &Tensor,
    pixels: &Tensor,
    prompts: Option<&DeepPrompts>,
) -> Result<Decomposition> {
    let mut x = vision.embed(pixels)?;
    let (b, n, _) = x.dims3()?;
    // Residual-stream parts of [CLS], each (B, k, W): input, then per block heads and MLP.
    let mut stream = vec![x.narrow(1, 0, 1)?];
    for (i, block) in vision.encoder.layers.iter().enumerate() {
        // A prompted block replaces the previous prompt outputs; blocks above the prompts carry
        // them along (`x` keeps them).
        let seq = match prompts {
            Some(p) if p.blocks().contains(&i) => {
                let tokens = p.tokens(i - p.first_block, b, x.dtype())?;
                Tensor::cat(&[&x.narrow(1, 0, n)?, &tokens], 1)?
            }
            _ => x.clone(),
        };
        let (out, heads, mlp) = block.forward_with_first_token_parts(&seq)?;
        x = out;
        stream.push(heads);
        stream.push(mlp.unsqueeze(1)?);
    }
    let embeds = vision
        .pool(&x)?
        .matmul(&projection.t()?)?
        .to_dtype(DType::F32)?;
    // The analysis runs in f32 whatever the model's dtype.
    let stream = Tensor::cat(&stream, 1)?.to_dtype(DType::F32)?;
    let (gamma, beta, eps) = vision.post_layernorm().parts();
    let gamma = gamma.to_dtype(DType::F32)?;
    // Linearised final norm: y = γ (r − μ) / σ + β with μ, σ of the whole [CLS] state r = Σ parts;
    // each part contributes γ (part − mean(part)) / σ, and β is a part of its own.
    let total = stream.sum(1)?;
    let mean = total.mean_keepdim(D::Minus1)?;
    let var = total.broadcast_sub(&mean)?.sqr()?.mean_keepdim(D::Minus1)?;
    let sigma = (var + eps)?.sqrt()?.unsqueeze(1)?;
    let centred = stream.broadcast_sub(&stream.mean_keepdim(D::Minus1)?)?;
    let normed = centred.broadcast_div(&sigma)?.broadcast_mul(&gamma)?;
    let width = normed.dim(2)?;
    let bias = beta
        .to_dtype(DType::F32)?
        .reshape((1, 1, width))?
        .broadcast_as((b, 1, width))?;
    let normed = Tensor::cat(
        &[
            &normed.narrow(1, 0, 1)?,
            &bias,
            &normed.narrow(1, 1, normed.dim(1)? - 1)?,
        ],
        1,
    )?;
    let parts = normed.broadcast_matmul(&projection.to_dtype(DType::F32)?.t()?)?;
    Ok(Decomposition { parts, embeds })
}
