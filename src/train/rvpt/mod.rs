//! RVPT: repulsive deep visual prompts. `prompts` (the learnable tokens), `encoder` (the prompted
//! image tower and its frozen twin sharing one prefix), `loss` (CE + lambda * FR), `fit` (the
//! loop and the prefix cache), `checkpoint` (one atomic safetensors file per defence).

/// Serialises a type through its `Display` and `FromStr` (settings written in checkpoints and
/// reports as they are typed on the command line).
macro_rules! serde_as_string {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
use serde_as_string;

pub mod checkpoint;
pub mod encoder;
pub mod fit;
pub mod loss;
pub mod prompts;

pub use checkpoint::{CheckpointMeta, PromptCheckpoint};
pub use encoder::PromptedEncoder;
pub use fit::{batch_loss, fit, frozen_part, EpochLog, FitState, Frozen, RvptConfig, ShotSampler};
pub use loss::{LossConfig, RepelAt, Repulsion};
pub use prompts::{DeepPrompts, PromptPlacement};
