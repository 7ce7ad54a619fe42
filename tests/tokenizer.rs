//! Token ids of 20 captions equal transformers' CLIPTokenizerFast built from OpenAI's BPE file.

mod common;

use rvpt::text::ClipTokenizer;

#[derive(serde::Deserialize)]
struct Tokens {
    captions: Vec<String>,
    input_ids: Vec<Vec<u32>>,
}

fn golden() -> Tokens {
    let text = std::fs::read_to_string(common::fixture("tokens.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn ids_equal_transformers() {
    let g = golden();
    let tok = ClipTokenizer::embedded(77).unwrap();
    assert_eq!(tok.vocab_size(), 49408);
    let ours = tok.encode(&g.captions).unwrap();
    for ((caption, a), b) in g.captions.iter().zip(&ours).zip(&g.input_ids) {
        assert_eq!(a, b, "ids differ for {caption:?}");
    }
}

#[test]
fn long_captions_are_truncated_keeping_end_of_text() {
    let tok = ClipTokenizer::embedded(77).unwrap();
    let long = "the quick brown fox ".repeat(40);
    let ids = &tok.encode(&[long]).unwrap()[0];
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], 49406);
    assert_eq!(ids[76], 49407);
    let short = &tok.encode(&["a photo of a cat.".into()]).unwrap()[0];
    assert_eq!(short.len(), 77);
    // [SOT] a photo of a cat . [EOT] then padding with <|endoftext|>.
    assert_eq!(&short[..8], &[49406, 320, 1125, 539, 320, 2368, 269, 49407]);
    assert!(short[8..].iter().all(|&t| t == 49407));
}

#[test]
fn empty_labels_are_refused() {
    assert!(matches!(
        rvpt::text::parse_labels(" , ,"),
        Err(rvpt::Error::EmptyLabels)
    ));
    assert_eq!(
        rvpt::text::parse_labels("cat, dog ,coffee mug").unwrap(),
        vec!["cat", "dog", "coffee mug"]
    );
}
