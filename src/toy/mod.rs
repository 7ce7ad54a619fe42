//! The toy world: a deterministic generator of captioned shape images and the word-level
//! tokenizer for its captions, on which a tiny CLIP is pretrained from scratch and backdoored
//! for the offline demo.

pub mod lab;
pub mod tokenizer;
pub mod world;

pub use tokenizer::{tokenizer, tokenizer_json, vocab_size, vocabulary, CONTEXT_LENGTH};
pub use world::{
    Attributes, Colour, Position, Size, Texture, ToySample, ToyWorld, WrittenSample, CLASSES,
};
