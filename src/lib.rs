//! rvpt: Repulsive Visual Prompt Tuning for backdoored CLIP models, on candle.
//!
//! The path every image takes: `image` (decode, preprocess) → `model` (vision tower, block by
//! block) → pooled feature → projection → cosine logits against `text` class embeddings.

pub mod data;
pub mod device;
pub mod error;
pub mod image;
pub mod model;
pub mod optim;
pub mod text;
pub mod weights;

pub use error::{Error, Result};
pub mod engine;
