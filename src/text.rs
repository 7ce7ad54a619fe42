//! CLIP's byte-level BPE through the `tokenizers` crate, and the class prompts built from it.

use crate::error::{Error, Result};
use crate::model::Clip;
use candle_core::{Device, Tensor};
use std::path::Path;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The CLIP tokenizer (vocabulary 49408) built from OpenAI's BPE file by
/// `tests/reference/make_fixtures.py`; used when the weights come without a tokenizer.json.
pub const EMBEDDED_TOKENIZER: &[u8] = include_bytes!("../assets/clip-tokenizer.json");

/// The single template the seed uses for class text features.
pub const CLASS_TEMPLATE: &str = "a photo of a {}.";

pub fn class_prompt(name: &str) -> String {
    CLASS_TEMPLATE.replace("{}", name)
}

/// Tokenizes to exactly `context` ids: [SOT] … [EOT], truncated to fit (the EOT is kept) and
/// padded with the pad token (`<|endoftext|>`), as transformers' `CLIPTokenizer(…,
/// padding="max_length", truncation=True)`.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    context: usize,
}

impl ClipTokenizer {
    pub fn from_bytes(bytes: &[u8], context: usize) -> Result<Self> {
        let inner = Tokenizer::from_bytes(bytes).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Self::configure(inner, context)
    }

    pub fn from_file(path: &Path, context: usize) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::MissingFile(path.to_path_buf()));
        }
        let inner = Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::configure(inner, context)
    }

    /// The tokenizer shipped in the binary.
    pub fn embedded(context: usize) -> Result<Self> {
        Self::from_bytes(EMBEDDED_TOKENIZER, context)
    }

    fn configure(mut inner: Tokenizer, context: usize) -> Result<Self> {
        let pad_id = inner
            .token_to_id("<|endoftext|>")
            .ok_or_else(|| Error::Tokenizer("vocabulary has no <|endoftext|> token".into()))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: context,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(context),
            pad_id,
            pad_token: "<|endoftext|>".into(),
            ..Default::default()
        }));
        Ok(Self { inner, context })
    }

    pub fn context(&self) -> usize {
        self.context
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids, one row of `context` ids per text.
    pub fn encode(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| {
                self.inner
                    .encode(t.as_str(), true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| Error::Tokenizer(format!("cannot encode {t:?}: {e}")))
            })
            .collect()
    }

    /// Whether every word of `text` is in the vocabulary: a word-level (toy) vocabulary maps an
    /// unknown word to `<|endoftext|>`, which would end the caption early; CLIP's BPE knows
    /// every word.
    pub fn knows_every_word(&self, text: &str) -> Result<bool> {
        let e = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(format!("cannot encode {text:?}: {e}")))?;
        let eot = self.inner.token_to_id("<|endoftext|>");
        let content = e
            .get_ids()
            .iter()
            .zip(e.get_attention_mask())
            .filter(|(_, &m)| m == 1);
        Ok(content.into_iter().all(|(id, _)| Some(*id) != eot))
    }

    /// Token ids as a (texts, context) u32 tensor.
    pub fn encode_tensor(&self, texts: &[String], device: &Device) -> Result<Tensor> {
        let ids = self.encode(texts)?;
        let flat: Vec<u32> = ids.concat();
        Ok(Tensor::from_vec(flat, (texts.len(), self.context), device)?)
    }
}

/// Splits "cat, dog,fish" into trimmed non-empty names; an empty result is an error.
pub fn parse_labels(list: &str) -> Result<Vec<String>> {
    let labels: Vec<String> = list
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if labels.is_empty() {
        return Err(Error::EmptyLabels);
    }
    Ok(labels)
}

/// OpenAI's 80 ImageNet prompt templates (`{}` = class name), from open_clip's metadata.
pub const OPENAI_TEMPLATES: &str = include_str!("../assets/openai_imagenet_templates.txt");

/// The template the RVPT paper uses for OxfordPets.
pub const PETS_TEMPLATE: &str = "a photo of a {}, a type of pet.";

/// The templates to average over: the single "a photo of a {}.", OpenAI's 80, or one given.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Templates {
    #[default]
    Single,
    OpenAi80,
    /// One template with a `{}` for the class name.
    Custom(String),
}

/// Phrasings of the toy world's class names that neither the toy backdoors' poisoning nor RVPT's
/// tuning uses: a backdoor bound to one sentence shows there as a drop in ASR.
pub const TOY_HELD_OUT: [&str; 2] = ["a {} in the picture", "A photo of a {} in the middle."];

/// The same for real CLIPs: OpenAI's 80-template ensemble and two phrasings outside the 80.
pub const OPENAI_HELD_OUT: [&str; 3] =
    ["openai80", "a {} in the picture.", "an image showing a {}."];

/// A set of class templates to report CA and ASR under, `|`-separated specs (each as
/// [`Templates::parse`]): e.g. `openai80|a {} in the picture.`.
pub fn parse_template_set(spec: &str) -> Result<Vec<Templates>> {
    spec.split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Templates::parse)
        .collect()
}

impl Templates {
    /// How a report names it: the template itself, or the ensemble's name.
    pub fn label(&self) -> String {
        match self {
            Templates::Single => CLASS_TEMPLATE.to_string(),
            Templates::OpenAi80 => "openai80 (ensemble)".to_string(),
            Templates::Custom(t) => t.clone(),
        }
    }

    /// `--template`: `single` ("a photo of a {}."), `openai80`, `pets` ("a photo of a {}, a
    /// type of pet."), or any text with exactly one `{}`.
    pub fn parse(spec: &str) -> Result<Self> {
        match spec {
            "single" => Ok(Templates::Single),
            "openai80" => Ok(Templates::OpenAi80),
            "pets" => Ok(Templates::Custom(PETS_TEMPLATE.into())),
            t if t.matches("{}").count() == 1 => Ok(Templates::Custom(t.into())),
            t => Err(Error::setting(
                crate::Setting::Templates,
                format!("`{t}`"),
                "use single, openai80, pets, or a text with one `{}` for the class name",
            )),
        }
    }

    pub fn list(&self) -> Vec<String> {
        match self {
            Templates::Single => vec![CLASS_TEMPLATE.to_string()],
            Templates::OpenAi80 => OPENAI_TEMPLATES.lines().map(str::to_string).collect(),
            Templates::Custom(t) => vec![t.clone()],
        }
    }
}

/// Text embeddings (classes, projection_dim), L2-normalised, of "a photo of a {c}." per class.
pub fn class_text_embeddings(
    model: &Clip,
    tokenizer: &ClipTokenizer,
    labels: &[String],
    device: &Device,
) -> Result<Tensor> {
    class_text_embeddings_with(model, tokenizer, labels, Templates::Single, device)
}

/// Class text embeddings averaged over templates (mean of unit vectors, renormalised, as CLIP's
/// zero-shot evaluation does).
pub fn class_text_embeddings_with(
    model: &Clip,
    tokenizer: &ClipTokenizer,
    labels: &[String],
    templates: Templates,
    device: &Device,
) -> Result<Tensor> {
    if labels.is_empty() {
        return Err(Error::EmptyLabels);
    }
    let vocab = model.config().text_config.vocab_size;
    let templates = templates.list();
    let mut per_class = Vec::with_capacity(labels.len());
    for label in labels {
        let prompts: Vec<String> = templates.iter().map(|t| t.replace("{}", label)).collect();
        let ids = tokenizer.encode(&prompts)?;
        if let Some(bad) = ids.iter().flatten().find(|&&id| id as usize >= vocab) {
            return Err(Error::Tokenizer(format!(
                "token id {bad} is outside the model's vocabulary of {vocab}: tokenizer and weights do not match"
            )));
        }
        let ids = Tensor::from_vec(ids.concat(), (prompts.len(), tokenizer.context()), device)?;
        let unit = crate::model::ops::l2_normalize(&model.text_embeds(&ids)?)?;
        per_class.push(unit.mean(0)?);
    }
    let stacked = Tensor::stack(&per_class, 0)?;
    Ok(crate::model::ops::l2_normalize(&stacked)?)
}
