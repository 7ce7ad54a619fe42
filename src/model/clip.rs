//! CLIP = image tower + text tower + their projections into one embedding space + a logit scale.

use super::config::ClipConfig;
use super::ops::l2_normalize;
use super::text::TextTransformer;
use super::transformer::Linear;
use super::vision::VisionTransformer;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct Clip {
    pub vision: VisionTransformer,
    pub text: TextTransformer,
    visual_projection: Linear,
    text_projection: Linear,
    /// log of the temperature's inverse, as stored (logits use its exponential).
    logit_scale: Tensor,
    cfg: ClipConfig,
}

impl Clip {
    pub fn new(vb: VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        let (vw, tw, e) = (
            cfg.vision_config.hidden_size,
            cfg.text_config.hidden_size,
            cfg.projection_dim,
        );
        Ok(Self {
            vision: VisionTransformer::new(vb.pp("vision_model"), &cfg.vision_config)?,
            text: TextTransformer::new(vb.pp("text_model"), &cfg.text_config)?,
            visual_projection: Linear::new(vb.pp("visual_projection"), vw, e, false)?,
            text_projection: Linear::new(vb.pp("text_projection"), tw, e, false)?,
            logit_scale: vb.get((), "logit_scale")?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &ClipConfig {
        &self.cfg
    }

    /// The image projection's weight (projection_dim, vision width); CLIP's has no bias.
    pub fn visual_projection_weight(&self) -> &Tensor {
        self.visual_projection.weight()
    }

    /// This CLIP (text tower, logit scale) with the image tower `vision` and the image
    /// projection of `projection_from`: for splicing two models' image towers.
    pub fn with_image_tower(&self, vision: VisionTransformer, projection_from: &Clip) -> Self {
        Self {
            vision,
            visual_projection: projection_from.visual_projection.clone(),
            ..self.clone()
        }
    }

    /// Pooled image feature (B, vision width): the [CLS] token after the final layer norm.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        self.vision.forward(pixels)
    }

    /// Pooled feature → embedding (B, projection_dim), not normalised (as `get_image_features`).
    pub fn project_image(&self, features: &Tensor) -> Result<Tensor> {
        self.visual_projection.forward(features)
    }

    pub fn image_embeds(&self, pixels: &Tensor) -> Result<Tensor> {
        self.project_image(&self.image_features(pixels)?)
    }

    /// Token ids (B, T) → text embedding (B, projection_dim), not normalised.
    pub fn text_embeds(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.text_projection.forward(&self.text.forward(input_ids)?)
    }

    /// exp(logit_scale) as a scalar tensor.
    pub fn logit_scale(&self) -> Result<Tensor> {
        self.logit_scale.exp()
    }

    /// logit_scale * cos(image, text): (B_images, B_texts).
    pub fn logits(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        let sim = l2_normalize(image_embeds)?.matmul(&l2_normalize(text_embeds)?.t()?)?;
        sim.broadcast_mul(&self.logit_scale()?.to_dtype(sim.dtype())?)
    }
}
