//! RVPT: repulsive deep visual prompts. `prompts` (the learnable tokens), `encoder` (the prompted
//! image tower and its frozen twin sharing one prefix), `loss` (CE + lambda * FR), `fit` (the
//! loop and the prefix cache), `checkpoint` (one atomic safetensors file per defence).

pub mod checkpoint;
pub mod encoder;
pub mod fit;
pub mod loss;
pub mod prompts;

pub use checkpoint::{CheckpointMeta, PromptCheckpoint};
pub use encoder::PromptedEncoder;
pub use fit::{batch_loss, fit, frozen_part, EpochLog, FitState, Frozen, RvptConfig};
pub use loss::{LossConfig, Repulsion};
pub use prompts::DeepPrompts;
