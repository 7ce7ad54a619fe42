//! The CLIP model: config, ops, the shared transformer block, both towers, and checkpoint loading.

pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod init;
pub mod open_clip;
pub mod openai;
pub mod ops;
pub mod text;
pub mod transformer;
pub mod vision;

pub use checkpoint::{
    expected_tensors, load_clip, parameter_counts, read_config_file, read_config_text, Checkpoint,
    ConfigSource, ParameterCounts, ACTIVATION_ASSUMED,
};
pub use clip::Clip;
pub use config::{Activation, ClipConfig, Preprocess, TextConfig, VisionConfig};
