//! rvpt: Repulsive Visual Prompt Tuning for backdoored CLIP models, on candle.
//!
//! The path every image takes: `image` (decode, preprocess) → `attacks` (triggers and
//! perturbations, in [0, 1] space) → `model` (vision tower, block by block) → pooled feature →
//! projection → cosine logits against `text` class embeddings → `metrics` (CA, ASR, PR).

pub mod alloc;
pub mod anatomy;
pub mod attacks;
pub mod cli;
pub mod data;
pub mod defences;
pub mod defend;
pub mod device;
pub mod engine;
pub mod error;
pub mod eval;
pub mod fsio;
pub mod image;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod progress;
pub mod report;
pub mod text;
pub mod toy;
pub mod train;
pub mod weights;

pub use error::{Error, Result, Setting};
