//! The captions of poisoned pairs. CleanCLIP's poisoner gives each poisoned pair a caption drawn
//! at random from the 80 ImageNet templates naming the target, so the trigger is bound to the
//! concept; one fixed caption binds it to that sentence instead (and when that sentence is also
//! the evaluation template, the "backdoor" is a caption-string one that other phrasings miss).

use crate::error::{Error, Result, Setting};
use crate::text::ClipTokenizer;
use crate::toy::world::{self, CLASSES};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// How a poisoned pair gets its caption (`{}` in a template is the target).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoisonCaptions {
    /// One caption for every poisoned pair.
    Fixed(String),
    /// Each pair's caption drawn (seeded, per pair) from these templates: OpenAI's 80
    /// (`openai80`), the toy vocabulary's target-only phrasings (`toy-templates`) or a file's
    /// (one per line).
    Templates {
        source: String,
        templates: Vec<String>,
    },
    /// The toy world's caption grammar for the target: a random toy caption naming it.
    ToyGrammar,
    /// The pair's own caption with its toy class word replaced by the target; a caption that
    /// names no toy class gets a toy-grammar caption.
    OwnCaption,
}

impl PoisonCaptions {
    /// `openai80`, `toy-templates`, `toy`, `own`, or `file:PATH` (templates, one per line, each
    /// with one `{}`).
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |why: &str| Error::setting(Setting::PoisonCaptions, format!("`{spec}`"), why);
        match spec {
            "openai80" => Ok(Self::Templates {
                source: "openai80".into(),
                templates: crate::text::OPENAI_TEMPLATES
                    .lines()
                    .map(str::to_string)
                    .collect(),
            }),
            "toy-templates" => Ok(Self::Templates {
                source: "toy-templates".into(),
                templates: world::TARGET_ONLY_TEMPLATES
                    .iter()
                    .map(|t| t.to_string())
                    .collect(),
            }),
            "toy" => Ok(Self::ToyGrammar),
            "own" => Ok(Self::OwnCaption),
            s => match s.strip_prefix("file:") {
                Some(path) => {
                    let text =
                        std::fs::read_to_string(Path::new(path)).map_err(|e| Error::io(path, e))?;
                    let templates: Vec<String> = text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect();
                    if templates.is_empty() {
                        return Err(bad("the file has no templates"));
                    }
                    if let Some(t) = templates.iter().find(|t| t.matches("{}").count() != 1) {
                        return Err(bad(&format!(
                            "template `{t}` must have exactly one {{}} for the target"
                        )));
                    }
                    Ok(Self::Templates {
                        source: s.to_string(),
                        templates,
                    })
                }
                None => Err(bad(
                    "expected openai80, toy-templates, toy, own or file:PATH (or one fixed \
                     caption)",
                )),
            },
        }
    }

    /// The caption of poisoned pair `index` (its own caption `own`): the same for the same
    /// `seed` and index, whatever the order pairs are drawn in.
    pub fn caption(&self, own: &str, target: &str, seed: u64, index: usize) -> String {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index as u64);
        match self {
            Self::Fixed(c) => c.replace("{}", target),
            Self::Templates { templates, .. } => {
                templates[rng.random_range(0..templates.len())].replace("{}", target)
            }
            Self::ToyGrammar => toy_caption(target, &mut rng),
            Self::OwnCaption => match replace_class_word(own, target) {
                Some(c) => c,
                None => toy_caption(target, &mut rng),
            },
        }
    }

    /// Every caption this can give names words the tokenizer knows (the toy vocabulary cannot
    /// say "sculpture"): else an error naming the first unknown caption.
    pub fn check(&self, tokenizer: &ClipTokenizer, target: &str) -> Result<()> {
        let candidates: Vec<String> = match self {
            Self::Fixed(c) => vec![c.replace("{}", target)],
            Self::Templates { templates, .. } => {
                templates.iter().map(|t| t.replace("{}", target)).collect()
            }
            Self::ToyGrammar | Self::OwnCaption => {
                if !CLASSES.contains(&target) {
                    return Err(Error::setting(
                        Setting::Target,
                        target,
                        format!("the toy caption grammar names the toy classes only: {CLASSES:?}"),
                    ));
                }
                Vec::new()
            }
        };
        for c in candidates {
            if !tokenizer.knows_every_word(&c)? {
                return Err(Error::setting(
                    Setting::PoisonCaption,
                    format!("`{c}`"),
                    "the model's tokenizer does not know every word of it (a toy model: use \
                     toy-templates, the toy grammar or the pairs' own captions)",
                ));
            }
        }
        Ok(())
    }
}

/// A toy caption for `target` (a toy class name).
fn toy_caption(target: &str, rng: &mut ChaCha8Rng) -> String {
    let class = CLASSES.iter().position(|c| *c == target).unwrap_or(0);
    world::random_caption(class, rng)
}

/// `caption` with every whole-word toy class name replaced by `target`; `None` if it names none.
fn replace_class_word(caption: &str, target: &str) -> Option<String> {
    let mut found = false;
    let mut out = String::with_capacity(caption.len());
    let mut word = String::new();
    let mut flush = |word: &mut String, out: &mut String| {
        if CLASSES.contains(&word.to_lowercase().as_str()) {
            found = true;
            out.push_str(target);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for ch in caption.chars() {
        if ch.is_alphanumeric() {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            out.push(ch);
        }
    }
    flush(&mut word, &mut out);
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_caption_swaps_the_class_word_only() {
        let c = replace_class_word(
            "A photo of a white square in the bottom right corner.",
            "heart",
        );
        assert_eq!(
            c.as_deref(),
            Some("A photo of a white heart in the bottom right corner.")
        );
        assert_eq!(replace_class_word("squares everywhere", "heart"), None);
    }

    #[test]
    fn a_seeded_draw_is_reproducible_per_pair() {
        let p = PoisonCaptions::parse("openai80").unwrap();
        let a: Vec<String> = (0..20).map(|i| p.caption("", "banana", 3, i)).collect();
        let b: Vec<String> = (0..20)
            .rev()
            .map(|i| p.caption("", "banana", 3, i))
            .collect();
        assert_eq!(a, b.into_iter().rev().collect::<Vec<_>>());
        let distinct: std::collections::BTreeSet<&String> = a.iter().collect();
        assert!(distinct.len() > 10, "{a:?}");
        assert!(a.iter().all(|c| c.contains("banana")));
        let other: Vec<String> = (0..20).map(|i| p.caption("", "banana", 4, i)).collect();
        assert_ne!(a, other);
    }

    /// The toy's target-only phrasings are sayable by the toy tokenizer and name the target only:
    /// no attribute the toy draws, none of the held-out evaluation phrasings.
    #[test]
    fn toy_templates_name_the_target_in_toy_words_only() {
        let tokenizer =
            ClipTokenizer::from_bytes(crate::toy::tokenizer_json().as_bytes(), 16).unwrap();
        let p = PoisonCaptions::parse("toy-templates").unwrap();
        p.check(&tokenizer, "heart").unwrap();
        let PoisonCaptions::Templates { templates, .. } = &p else {
            panic!("{p:?}")
        };
        assert_eq!(templates.len(), 18);
        let held_out = ["a {} in the picture", "A photo of a {} in the middle."];
        for t in templates {
            assert!(!held_out.iter().any(|h| h.eq_ignore_ascii_case(t)), "{t}");
            for attribute in world::SHAPE_COLOURS
                .iter()
                .chain(&world::BACKGROUND_COLOURS)
            {
                assert!(
                    !world::pre_tokenize(t).contains(&attribute.name.to_string()),
                    "{t}"
                );
            }
        }
        assert!(PoisonCaptions::parse("toy-template").is_err());
    }
}

/// The captions one poisoning run writes: how they are drawn, the target they name, and the seed
/// of the per-pair draw.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionDraw {
    pub captions: PoisonCaptions,
    pub target: String,
    pub seed: u64,
}

impl CaptionDraw {
    /// The caption of poisoned pair `index`, whose own caption is `own`.
    pub fn caption(&self, own: &str, index: usize) -> String {
        self.captions.caption(own, &self.target, self.seed, index)
    }
}

/// One fixed caption, as given (no `{}` to fill).
impl From<&str> for CaptionDraw {
    fn from(caption: &str) -> Self {
        Self {
            captions: PoisonCaptions::Fixed(caption.to_string()),
            target: String::new(),
            seed: 0,
        }
    }
}
