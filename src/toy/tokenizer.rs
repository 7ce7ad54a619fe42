//! A word-level tokenizer over the toy world's closed vocabulary, as a Hugging Face
//! `tokenizer.json` that [`crate::text::ClipTokenizer`] loads like CLIP's own.
//!
//! CLIP's 49408-entry BPE would dominate a ~1 MB model; the toy captions use under a hundred words.
//! Ids: the words in sorted order, then `<|startoftext|>`, then `<|endoftext|>` last, because
//! CLIP pools the text at the argmax of the ids (OpenAI checkpoints) and must land on the end token.

use super::world;
use crate::error::Result;
use crate::text::{class_prompt, ClipTokenizer};
use serde_json::{json, Map, Value};

pub const START_TOKEN: &str = "<|startoftext|>";
pub const END_TOKEN: &str = "<|endoftext|>";

/// The context length the toy model is meant to use: every caption and class prompt fits with
/// its start and end tokens (`tests/toy.rs` checks it against the longest possible caption).
pub const CONTEXT_LENGTH: usize = 16;

/// Word tokens in id order (without the two special tokens, which follow them).
pub fn vocabulary() -> Vec<String> {
    let mut words = world::caption_tokens();
    for class in world::CLASSES {
        words.extend(world::pre_tokenize(&class_prompt(class)));
    }
    // BTreeSet iteration is sorted, so ids are stable across runs and platforms.
    words.into_iter().collect()
}

/// Vocabulary size including `<|startoftext|>` and `<|endoftext|>`.
pub fn vocab_size() -> usize {
    vocabulary().len() + 2
}

pub fn start_id() -> u32 {
    vocabulary().len() as u32
}

pub fn end_id() -> u32 {
    vocabulary().len() as u32 + 1
}

/// The tokenizer as `tokenizer.json` text: WordLevel model with `<|endoftext|>` as unknown token,
/// NFC + whitespace-collapse + strip + lowercase normalizer, whitespace then per-character
/// punctuation pre-tokenizer, and a template post-processor adding the start and end tokens.
pub fn tokenizer_json() -> String {
    let words = vocabulary();
    let (sot, eot) = (words.len() as u32, words.len() as u32 + 1);
    let mut vocab = Map::new();
    for (id, w) in words.iter().enumerate() {
        vocab.insert(w.clone(), json!(id));
    }
    vocab.insert(START_TOKEN.into(), json!(sot));
    vocab.insert(END_TOKEN.into(), json!(eot));

    let added = |id: u32, content: &str| {
        json!({
            "id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        })
    };
    let special = |name: &str| json!({"SpecialToken": {"id": name, "type_id": 0}});
    let sequence = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let value: Value = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [added(sot, START_TOKEN), added(eot, END_TOKEN)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Strip", "strip_left": true, "strip_right": true},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"},
            {"type": "Punctuation", "behavior": "Isolated"}
        ]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special(START_TOKEN), sequence("A", 0), special(END_TOKEN)],
            "pair": [special(START_TOKEN), sequence("A", 0), special(END_TOKEN),
                     sequence("B", 1), special(END_TOKEN)],
            "special_tokens": {
                START_TOKEN: {"id": START_TOKEN, "ids": [sot], "tokens": [START_TOKEN]},
                END_TOKEN: {"id": END_TOKEN, "ids": [eot], "tokens": [END_TOKEN]}
            }
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": END_TOKEN}
    });
    // `{:#}` is serde_json's infallible pretty printer.
    format!("{value:#}")
}

/// The toy tokenizer configured for `context` ids per text (padded and truncated as CLIP's).
pub fn tokenizer(context: usize) -> Result<ClipTokenizer> {
    ClipTokenizer::from_bytes(tokenizer_json().as_bytes(), context)
}
