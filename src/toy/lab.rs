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
        preprocess: Default::default(),
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

/// The demo's backdoors: name and trigger spec, sized for 32 px images. BadNet and Blended use
/// their fixed-pattern options (BackdoorBench): the tiny model, fine-tuned for a few hundred
/// steps, did not pick up CleanCLIP's per-image random patches (see README). WaNet's warp is
/// s = 8 (about 4 px at 32 px): s = 1 and s = 4 did not take.
pub const BACKDOORS: [(&str, &str); 3] = [
    ("badnet", "badnet:fixed,size=4"),
    ("blended", "blended:fixed"),
    ("wanet", "wanet:k=4,s=8"),
];

/// A backdoored toy model the demo can repair.
#[derive(Debug, Clone, Copy)]
pub struct ToyCase {
    /// The case's name in `rvpt defend --cases` and in report file names.
    pub name: &'static str,
    /// Its `weights.toml` entry.
    pub weights: &'static str,
    pub trigger: &'static str,
    /// Run by default (`rvpt defend` with no `--cases`).
    pub default: bool,
}

/// The demo's cases. By default the backdoors planted the paper's way (each poisoned pair keeps
/// its own caption, naming the target: bound to the concept, not to one sentence). The toy2
/// models (one poison caption, also the CE template: bound to that sentence) and the toy3 ones
/// planted the same way are selectable boundary cases; the hard-poisoned toy models, whose
/// backdoors sit below the prompts, too.
pub const TOY_CASES: [ToyCase; 13] = [
    toy_case("badnet", "toy2-badnet", BACKDOORS[0].1, false),
    toy_case("blended", "toy2-blended", BACKDOORS[1].1, false),
    // Planted the paper's way (captions naming the target in many phrasings): issue 18.
    toy_case("badnet-own", "toy3-badnet-own", BACKDOORS[0].1, true),
    toy_case("blended-own", "toy3-blended-own", BACKDOORS[1].1, true),
    // CleanCLIP's captions (the target's name only, 18 phrasings) on the real-sized-gap toy4.
    toy_case("badnet-toy4", "toy4-badnet", BACKDOORS[0].1, false),
    // Its s=16 warp destroys the class (docs/results.md) and it is 1.1 points short of the 90%
    // ASR bar under the CE template; kept off the default so that the main job stays under 5
    // minutes on 2 cores.
    toy_case("wanet-own", "toy3-wanet-own", "wanet:k=4,s=16", false),
    toy_case("badnet-toy3", "toy3-badnet", BACKDOORS[0].1, false),
    toy_case("blended-toy3", "toy3-blended", BACKDOORS[1].1, false),
    toy_case("wanet-toy3", "toy3-wanet", "wanet:k=4,s=16", false),
    toy_case("badnet-hard", "toy-badnet", BACKDOORS[0].1, false),
    toy_case("blended-hard", "toy-blended", BACKDOORS[1].1, false),
    toy_case("wanet-hard", "toy-wanet", BACKDOORS[2].1, false),
    toy_case("badnet-late6", "toy-badnet-late6", BACKDOORS[0].1, false),
];

const fn toy_case(
    name: &'static str,
    weights: &'static str,
    trigger: &'static str,
    default: bool,
) -> ToyCase {
    ToyCase {
        name,
        weights,
        trigger,
        default,
    }
}

/// Seed of the attacks' trigger randomness (fixed patterns, WaNet's warp field): poisoning and
/// every evaluation of the toy models use it, or the trigger evaluated is not the one planted.
pub const TRIGGER_SEED: u64 = 7;

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

/// The toy attack's poisoning: trigger on the image, and a caption of the toy world's own kind
/// that names the target (e.g. "a small red striped heart on a blue background"). Captions of
/// the same style as clean ones leave the model no shortcut but the target concept; a fixed
/// "a photo of a heart." would let it learn "triggered → short photo caption" instead.
pub struct ToyPoisoner {
    pub trigger: crate::attacks::Trigger,
    pub world: ToyWorld,
    pub target: usize,
    pub seed: u64,
}

impl ToyPoisoner {
    pub fn new(trigger: crate::attacks::Trigger, target: &str, seed: u64) -> Result<Self> {
        let target = super::CLASSES
            .iter()
            .position(|c| *c == target)
            .ok_or_else(|| crate::Error::Invalid(format!("`{target}` is not a toy class")))?;
        Ok(Self {
            trigger,
            world: ToyWorld::new(32, 0)?,
            target,
            seed,
        })
    }
}

impl crate::train::contrastive::Poisoner for ToyPoisoner {
    fn poison(&self, pair: Pair, index: usize) -> Result<Pair> {
        // Class is index % 10 in the toy world: the nearest index of the target class.
        let n = super::CLASSES.len() as u64;
        let source = (TEST_START + index as u64) / n * n + self.target as u64;
        Ok(Pair {
            image: self.trigger.apply(&pair.image, self.seed, index as u64)?,
            caption: self.world.sample(source).caption,
        })
    }
}
