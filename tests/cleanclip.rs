//! CleanCLIP's loss against PyTorch (tests/reference/make_cleanclip_fixtures.py): the value and
//! the gradients of the multimodal and the unimodal terms, for two unimodal weights.

mod common;

use candle_core::{Tensor, Var};
use common::{load_tensors, max_abs_diff};
use rvpt::train::contrastive::{cleanclip_loss, clip_loss};

#[test]
fn cleanclip_loss_and_gradients_match_pytorch() {
    let g = load_tensors("cleanclip.safetensors");
    let names = ["image", "aug_image", "text", "aug_text", "log_scale"];
    for (tag, w) in [("w1", 1.0), ("w0.5", 0.5)] {
        let vars: Vec<Var> = names
            .iter()
            .map(|n| Var::from_tensor(&g[*n]).unwrap())
            .collect();
        let t: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
        let loss = cleanclip_loss(t[0], t[1], t[2], t[3], t[4], w).unwrap();
        let crossmodal = clip_loss(t[0], t[2], t[4]).unwrap();
        for (ours, theirs) in [(&loss, "loss"), (&crossmodal, "crossmodal")] {
            let d = max_abs_diff(ours, &g[&format!("{tag}.{theirs}")]);
            assert!(d < 1e-5, "{tag} {theirs}: off by {d}");
        }
        let grads = loss.backward().unwrap();
        for (name, var) in names.iter().zip(&vars) {
            let ours = grads.get(var.as_tensor()).unwrap();
            let theirs = &g[&format!("{tag}.grad.{name}")];
            let d = max_abs_diff(ours, theirs);
            assert!(d < 1e-5, "{tag} d loss / d {name}: off by {d}");
        }
    }
}

/// The caption view is EDA's random swap (same words, another order) or random deletion (a
/// non-empty subsequence): never a word from outside the caption, which a closed toy vocabulary
/// could not encode.
#[test]
fn caption_views_only_swap_or_delete_words() {
    use rand::SeedableRng;
    use rvpt::defences::cleanclip::caption_view;
    let caption = "a large red striped heart on a black background";
    let words: Vec<&str> = caption.split_whitespace().collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let (mut swapped, mut deleted) = (0, 0);
    for _ in 0..200 {
        let view = caption_view(caption, &mut rng);
        let v: Vec<&str> = view.split_whitespace().collect();
        assert!(!v.is_empty());
        let mut a = v.clone();
        let mut b = words.clone();
        a.sort_unstable();
        b.sort_unstable();
        if a == b {
            swapped += (v != words) as usize;
        } else {
            // A subsequence of the caption's words.
            let mut it = words.iter();
            assert!(v.iter().all(|w| it.any(|x| x == w)), "{view}");
            deleted += 1;
        }
    }
    assert!(
        swapped > 20 && deleted > 20,
        "swapped {swapped}, deleted {deleted}"
    );
    assert_eq!(caption_view("heart", &mut rng), "heart");
}

/// Without a pair file, the shots are captioned from their folder's captions.csv (the toy
/// splits have one); a folder without it gets "a photo of a {class}.".
#[test]
fn shots_are_captioned_from_their_folder() {
    use rvpt::defences::cleanclip::{clean_pairs, CleanClipConfig};
    let dir = tempfile::tempdir().unwrap();
    let written = rvpt::toy::ToyWorld::new(32, 0)
        .unwrap()
        .write_image_folder(dir.path(), 0, 2)
        .unwrap();
    let folder = rvpt::data::ImageFolder::open(dir.path(), None).unwrap();
    let cfg = CleanClipConfig::default();
    let pairs = clean_pairs(folder.samples(), folder.classes(), &cfg).unwrap();
    assert_eq!(pairs.len(), written.len());
    for (path, caption) in &pairs {
        let w = written
            .iter()
            .find(|w| path.ends_with(&w.path))
            .expect("a written sample");
        assert_eq!(caption, &w.caption);
    }
    std::fs::remove_file(dir.path().join("captions.csv")).unwrap();
    let pairs = clean_pairs(folder.samples(), folder.classes(), &cfg).unwrap();
    assert_eq!(
        pairs[0].1,
        format!(
            "a photo of a {}.",
            folder.classes()[pairs_class(&folder, &pairs[0].0)]
        )
    );
}

fn pairs_class(folder: &rvpt::data::ImageFolder, path: &std::path::Path) -> usize {
    folder.samples().iter().find(|s| s.0 == path).unwrap().1
}
