//! The toy lab: the tiny CLIP's config, its training pairs drawn from the toy world, and the
//! recipe that pretrains it and plants backdoors (used by `examples/build_toy.rs`).

use super::world::ToyWorld;
use crate::error::Result;
use crate::model::{Activation, ClipConfig, TextConfig, VisionConfig};
use crate::train::contrastive::{Pair, PairSource};
use candle_core::Device;

/// Index where the toy test split starts; training uses indices below it.
pub const TEST_START: u64 = 1_000_000;

/// The tiny CLIP: 12 vision blocks (so "the last 6 blocks" means what it means for ViT-B/32),
/// width 64, 32 px images in 8 px patches; a 3-block text tower over the toy vocabulary.
pub fn model_config() -> ClipConfig {
    ClipConfig {
        projection_dim: 64,
        logit_scale_init_value: 2.6592,
        vision_config: VisionConfig {
            hidden_size: 64,
            intermediate_size: 256,
            num_attention_heads: 4,
            num_hidden_layers: 12,
            image_size: 32,
            patch_size: 8,
            num_channels: 3,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        },
        text_config: TextConfig {
            hidden_size: 64,
            intermediate_size: 256,
            num_attention_heads: 4,
            num_hidden_layers: 3,
            max_position_embeddings: super::CONTEXT_LENGTH,
            vocab_size: super::vocab_size(),
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            // The end-of-text token has the largest id: pool at the argmax, like OpenAI's CLIP.
            eos_token_id: 2,
        },
    }
}

/// `len` consecutive samples of the toy world from `start`, as training pairs.
pub struct ToyPairs {
    pub world: ToyWorld,
    pub start: u64,
    pub len: usize,
}

impl PairSource for ToyPairs {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize) -> Result<Pair> {
        let s = self.world.sample(self.start + index as u64);
        Ok(Pair {
            image: crate::image::to_unit_tensor(&s.image, &Device::Cpu)?,
            caption: s.caption,
        })
    }
}

/// The demo's backdoors: name and trigger spec, with trigger sizes scaled to 32 px images.
pub const BACKDOORS: [(&str, &str); 3] = [
    ("badnet", "badnet:size=3"),
    ("blended", "blended"),
    ("wanet", "wanet:k=4,s=1"),
];

/// The attacker's target class in the toy world.
pub const TARGET: &str = "heart";

/// Writes (once) the toy train split (`shots` images per class) and test split (100 per class)
/// under `dir`; returns their paths.
pub fn ensure_splits(
    dir: &std::path::Path,
    shots: usize,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let world = ToyWorld::new(32, 0)?;
    let train = dir.join(format!("toy-train-{shots}"));
    let test = dir.join("toy-test");
    if !train.join("captions.csv").exists() {
        world.write_image_folder(&train, 0, shots)?;
    }
    if !test.join("captions.csv").exists() {
        world.write_image_folder(&test, TEST_START, 100)?;
    }
    Ok((train, test))
}
