//! The toy world: determinism, balance, captions that describe the image, shapes a classifier can
//! tell apart, the word-level tokenizer, and the image-folder writer.

use rvpt::toy::world::{self, BACKGROUND_COLOURS, SHAPE_COLOURS};
use rvpt::toy::{tokenizer, Position, Size, Texture, ToySample, ToyWorld, CLASSES, CONTEXT_LENGTH};
use std::collections::{BTreeMap, HashMap, HashSet};

const TEST_START: u64 = 1_000_000;

fn world() -> ToyWorld {
    ToyWorld::new(32, 7).unwrap()
}

fn dist(a: [u8; 3], b: [u8; 3]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(&x, y)| (x as f32 - y as f32).powi(2))
        .sum::<f32>()
        .sqrt()
}

/// 1.0 where a pixel is far from the sample's nominal background colour: the rendered shape.
fn mask(s: &ToySample) -> Vec<f32> {
    s.image
        .pixels()
        .map(|p| (dist(p.0, s.attributes.background.rgb) > 75.0) as u8 as f32)
        .collect()
}

fn words(caption: &str) -> Vec<String> {
    world::pre_tokenize(caption)
}

#[test]
fn samples_are_a_pure_function_of_seed_and_index() {
    let (a, b) = (world(), world());
    for index in [0, 1, 17, 999, TEST_START, u64::MAX] {
        let (x, y) = (a.sample(index), b.sample(index));
        assert_eq!(x.image, y.image, "pixels differ at index {index}");
        assert_eq!(x.caption, y.caption);
        assert_eq!(x.attributes, y.attributes);
        assert_eq!(x.class, y.class);
    }
    let other = ToyWorld::new(32, 8).unwrap();
    let differing = (0..20)
        .filter(|&i| other.sample(i).image != a.sample(i).image)
        .count();
    assert_eq!(differing, 20, "another seed must give other images");
    assert_ne!(a.sample(0).image, a.sample(10).image);
}

#[test]
fn scene_and_caption_do_not_depend_on_resolution() {
    let (small, large) = (
        ToyWorld::new(32, 3).unwrap(),
        ToyWorld::new(224, 3).unwrap(),
    );
    for i in 0..10 {
        let (s, l) = (small.sample(i), large.sample(i));
        assert_eq!(s.caption, l.caption);
        assert_eq!(s.attributes, l.attributes);
        assert_eq!(l.image.dimensions(), (224, 224));
        // The 224 px render, shrunk, shows the same shape in the same place.
        let shrunk =
            image::imageops::resize(&l.image, 32, 32, image::imageops::FilterType::Triangle);
        let err: f32 = shrunk
            .pixels()
            .zip(s.image.pixels())
            .map(|(a, b)| dist(a.0, b.0))
            .sum::<f32>()
            / 1024.0;
        assert!(err < 30.0, "sample {i}: mean colour distance {err}");
    }
}

#[test]
fn invalid_image_sizes_are_refused() {
    for size in [0, 8, 15, 1025] {
        let err = ToyWorld::new(size, 0).unwrap_err().to_string();
        assert!(err.contains(&size.to_string()), "{err}");
    }
    assert_eq!(ToyWorld::new(16, 0).unwrap().image_size(), 16);
}

#[test]
fn classes_are_balanced_and_every_attribute_occurs() {
    let w = world();
    let samples: Vec<ToySample> = (0..400).map(|i| w.sample(i)).collect();
    let mut per_class = [0usize; 10];
    for s in &samples {
        per_class[s.class] += 1;
        assert_eq!(s.image.dimensions(), (32, 32));
    }
    assert_eq!(per_class, [40; 10]);
    assert_eq!(ToyWorld::classes(), &CLASSES);
    let set =
        |f: &dyn Fn(&ToySample) -> String| -> HashSet<String> { samples.iter().map(f).collect() };
    assert_eq!(
        set(&|s| s.attributes.colour.name.into()).len(),
        SHAPE_COLOURS.len()
    );
    assert_eq!(
        set(&|s| s.attributes.background.name.into()).len(),
        BACKGROUND_COLOURS.len()
    );
    assert_eq!(
        set(&|s| format!("{:?}", s.attributes.texture)).len(),
        Texture::ALL.len()
    );
    assert_eq!(
        set(&|s| format!("{:?}", s.attributes.size)).len(),
        Size::ALL.len()
    );
    assert_eq!(
        set(&|s| format!("{:?}", s.attributes.position)).len(),
        Position::ALL.len()
    );
}

#[test]
fn background_never_matches_and_always_contrasts_with_the_shape() {
    for c in SHAPE_COLOURS {
        let allowed = ToyWorld::backgrounds_for(&c);
        let names: Vec<_> = allowed.iter().map(|b| b.name).collect();
        println!("{:>7}: {names:?}", c.name);
        assert!(allowed.len() >= 3, "{} has only {names:?}", c.name);
        assert!(!names.contains(&c.name));
    }
    let w = world();
    for i in 0..1000 {
        let a = w.sample(i).attributes;
        assert_ne!(a.colour.name, a.background.name, "sample {i}");
        assert!(dist(a.colour.rgb, a.background.rgb) >= world::MIN_CONTRAST);
    }
}

#[test]
fn shapes_stay_inside_the_frame() {
    // Every border pixel is background: the margin accounts for size, rotation and jitter.
    let w = world();
    for i in 0..600 {
        let s = w.sample(i);
        let n = 32;
        for k in 0..n {
            for (x, y) in [(k, 0), (k, n - 1), (0, k), (n - 1, k)] {
                let d = dist(s.image.get_pixel(x, y).0, s.attributes.background.rgb);
                assert!(
                    d < 40.0,
                    "sample {i} ({}) touches the border at ({x},{y})",
                    CLASSES[s.class]
                );
            }
        }
    }
}

#[test]
fn captions_name_the_class_and_describe_the_image_truthfully() {
    let w = world();
    let colours: HashSet<&str> = SHAPE_COLOURS
        .iter()
        .chain(&BACKGROUND_COLOURS)
        .map(|c| c.name)
        .collect();
    for i in 0..1000 {
        let s = w.sample(i);
        let ws = words(&s.caption);
        assert!(
            ws.contains(&CLASSES[s.class].to_string()),
            "{:?}",
            s.caption
        );
        for other in CLASSES.iter().filter(|&&c| c != CLASSES[s.class]) {
            assert!(
                !ws.contains(&other.to_string()),
                "{:?} names {other}",
                s.caption
            );
        }
        let a = s.attributes;
        for word in &ws {
            if colours.contains(word.as_str()) {
                assert!(
                    word == a.colour.name || word == a.background.name,
                    "{:?}: colour {word} is neither shape nor background",
                    s.caption
                );
            }
            let wrong_sizes = Size::ALL.iter().filter(|&&z| z != a.size);
            for z in wrong_sizes {
                assert!(!z.words().contains(&word.as_str()), "{:?}: size", s.caption);
            }
            let wrong_textures = Texture::ALL.iter().filter(|&&t| t != a.texture);
            for t in wrong_textures {
                assert!(
                    !t.adjectives().contains(&word.as_str()),
                    "{:?}: texture",
                    s.caption
                );
            }
        }
        // Articles agree with the next word.
        for pair in ws.windows(2) {
            let vowel = pair[1].starts_with(['a', 'e', 'i', 'o', 'u']);
            assert!(pair[0] != "a" || !vowel, "{:?}", s.caption);
            assert!(pair[0] != "an" || vowel, "{:?}", s.caption);
        }
    }
}

#[test]
fn captions_vary() {
    let w = world();
    let captions: Vec<String> = (0..500).map(|i| w.sample(i).caption).collect();
    let distinct: HashSet<&String> = captions.iter().collect();
    println!("{} distinct captions of 500", distinct.len());
    assert!(
        distinct.len() >= 400,
        "only {} distinct captions",
        distinct.len()
    );
    // Per class too: the attributes, not the class, make most of the variety.
    let circles: HashSet<&String> = captions.iter().step_by(10).collect();
    assert!(
        circles.len() >= 40,
        "{} distinct circle captions",
        circles.len()
    );
}

#[test]
fn class_masks_differ() {
    // Mean shape masks of centred large samples: one per class, compared pairwise.
    let w = world();
    let mut sums: Vec<Vec<f32>> = vec![vec![0.0; 1024]; 10];
    let mut counts = [0usize; 10];
    let mut i = 0;
    while counts.iter().any(|&c| c < 15) {
        let s = w.sample(i);
        i += 1;
        let a = s.attributes;
        if a.position == Position::Center && a.size == Size::Large && counts[s.class] < 15 {
            counts[s.class] += 1;
            for (acc, m) in sums[s.class].iter_mut().zip(mask(&s)) {
                *acc += m;
            }
        }
    }
    let means: Vec<Vec<f32>> = sums
        .iter()
        .zip(counts)
        .map(|(s, c)| s.iter().map(|v| v / c as f32).collect())
        .collect();
    let mut closest = (f32::MAX, 0, 0);
    for a in 0..10 {
        for b in a + 1..10 {
            let d = means[a]
                .iter()
                .zip(&means[b])
                .map(|(x, y)| (x - y).abs())
                .sum::<f32>()
                / 1024.0;
            if d < closest.0 {
                closest = (d, a, b);
            }
        }
    }
    println!(
        "closest mean masks: {} vs {}, mean |diff| {:.3}",
        CLASSES[closest.1], CLASSES[closest.2], closest.0
    );
    assert!(closest.0 > 0.04, "{closest:?}");
}

/// Nearest-centroid accuracy on the test split, centroids from `n_train` training samples.
fn nearest_centroid(features: impl Fn(&ToySample) -> Vec<f32>, n_train: u64) -> f32 {
    let w = world();
    let mut centroids: Vec<Vec<f32>> = Vec::new();
    let mut counts = [0f32; 10];
    for i in 0..n_train {
        let s = w.sample(i);
        let f = features(&s);
        if centroids.is_empty() {
            centroids = vec![vec![0.0; f.len()]; 10];
        }
        counts[s.class] += 1.0;
        for (c, v) in centroids[s.class].iter_mut().zip(f) {
            *c += v;
        }
    }
    for (c, n) in centroids.iter_mut().zip(counts) {
        c.iter_mut().for_each(|v| *v /= n);
    }
    let n_test = 200;
    let correct = (TEST_START..TEST_START + n_test)
        .filter(|&i| {
            let s = w.sample(i);
            let f = features(&s);
            let best = (0..10)
                .min_by(|&a, &b| {
                    let d =
                        |c: &Vec<f32>| c.iter().zip(&f).map(|(x, y)| (x - y).powi(2)).sum::<f32>();
                    d(&centroids[a]).total_cmp(&d(&centroids[b]))
                })
                .unwrap();
            best == s.class
        })
        .count();
    correct as f32 / n_test as f32
}

#[test]
fn nearest_centroid_on_shape_masks_beats_chance() {
    // Raw pixels, each image standardised so colour does not swamp shape.
    let raw = |s: &ToySample| {
        let v: Vec<f32> = s.image.as_raw().iter().map(|&b| b as f32).collect();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt();
        v.iter()
            .map(|x| (x - mean) / std.max(1.0))
            .collect::<Vec<f32>>()
    };
    // The shape mask moved so its centre of mass is at the image centre: position removed.
    let centred = |s: &ToySample| {
        let m = mask(s);
        let total: f32 = m.iter().sum::<f32>().max(1.0);
        let cx = (0..1024).map(|i| (i % 32) as f32 * m[i]).sum::<f32>() / total;
        let cy = (0..1024).map(|i| (i / 32) as f32 * m[i]).sum::<f32>() / total;
        let (ox, oy) = ((cx - 15.5).round() as i32, (cy - 15.5).round() as i32);
        let mut out = vec![0f32; 1024];
        for y in 0..32i32 {
            for x in 0..32i32 {
                let (sx, sy) = (x + ox, y + oy);
                if (0..32).contains(&sx) && (0..32).contains(&sy) {
                    out[(y * 32 + x) as usize] = m[(sy * 32 + sx) as usize];
                }
            }
        }
        out
    };
    let acc_raw = nearest_centroid(raw, 200);
    let acc_mask = nearest_centroid(mask, 200);
    let acc_centred = nearest_centroid(centred, 200);
    println!(
        "nearest centroid, 200 train / 200 test, chance 0.10: standardised pixels {acc_raw:.3}, \
         shape masks {acc_mask:.3}, centred shape masks {acc_centred:.3}"
    );
    assert!(acc_mask > 0.18, "masks: {acc_mask}");
    assert!(acc_centred > 0.35, "centred masks: {acc_centred}");
}

#[test]
fn tokenizer_covers_every_caption_and_places_end_of_text() {
    let tok = tokenizer(CONTEXT_LENGTH).unwrap();
    let vocab = rvpt::toy::vocabulary();
    let size = rvpt::toy::vocab_size();
    assert_eq!(tok.vocab_size(), size);
    assert_eq!(size, vocab.len() + 2);
    let (sot, eot) = (tokenizer::start_id(), tokenizer::end_id());
    assert_eq!(eot as usize, size - 1, "end of text must be the largest id");
    println!("toy vocabulary: {size} tokens");

    let w = world();
    let mut captions: Vec<String> = (0..1000)
        .map(|i| w.sample(TEST_START + i).caption)
        .collect();
    captions.extend(CLASSES.iter().map(|c| rvpt::text::class_prompt(c)));
    let ids = tok.encode(&captions).unwrap();
    let mut longest = 0;
    for (caption, ids) in captions.iter().zip(&ids) {
        let expected = words(caption);
        let n = expected.len();
        longest = longest.max(n);
        assert_eq!(ids.len(), CONTEXT_LENGTH);
        assert!(n + 2 <= CONTEXT_LENGTH, "{caption:?} does not fit");
        assert_eq!(ids[0], sot);
        // No unknown words: the unknown token is <|endoftext|>, so none may appear inside.
        let back: Vec<&str> = ids[1..=n]
            .iter()
            .map(|&i| vocab[i as usize].as_str())
            .collect();
        assert_eq!(back, expected, "{caption:?}");
        assert_eq!(
            ids[n + 1],
            eot,
            "{caption:?}: end of text right after the last word"
        );
        assert!(ids[n + 1..].iter().all(|&i| i == eot));
        // CLIP's argmax pooling picks the first end-of-text.
        let argmax = ids
            .iter()
            .enumerate()
            .max_by_key(|&(p, &v)| (v, std::cmp::Reverse(p)))
            .unwrap()
            .0;
        assert_eq!(argmax, n + 1);
    }
    println!(
        "longest caption among 1000: {longest} tokens; bound {}",
        world::max_caption_tokens()
    );
    assert!(longest <= world::max_caption_tokens());
    assert!(world::max_caption_tokens() + 2 <= CONTEXT_LENGTH);
}

#[test]
fn tokenizer_round_trips_and_handles_foreign_text() {
    let inner = tokenizers::Tokenizer::from_bytes(rvpt::toy::tokenizer_json().as_bytes()).unwrap();
    let w = world();
    for i in 0..200 {
        let caption = w.sample(i).caption;
        let enc = inner.encode(caption.as_str(), true).unwrap();
        let text = inner.decode(enc.get_ids(), true).unwrap();
        assert_eq!(text, words(&caption).join(" "));
        let again = inner.encode(text.as_str(), true).unwrap();
        assert_eq!(again.get_ids(), enc.get_ids());
    }
    let tok = tokenizer(CONTEXT_LENGTH).unwrap();
    let eot = tokenizer::end_id();
    // Case, extra whitespace and punctuation runs normalise to the same ids.
    let a = &tok.encode(&["a photo of a star.".into()]).unwrap()[0];
    let b = &tok.encode(&["  A   Photo of a STAR . ".into()]).unwrap()[0];
    assert_eq!(a, b);
    // Unknown words become <|endoftext|>, the unknown token.
    let unk = &tok.encode(&["a zebra".into()]).unwrap()[0];
    assert_eq!(unk[2], eot);
    // Over-long text is truncated to the context with the end token kept last.
    let long = "a big red star ".repeat(10);
    let ids = &tok.encode(&[long]).unwrap()[0];
    assert_eq!(ids.len(), CONTEXT_LENGTH);
    assert_eq!(ids[CONTEXT_LENGTH - 1], eot);
    assert!(ids[1..CONTEXT_LENGTH - 1]
        .iter()
        .all(|&i| i < tokenizer::start_id()));
    // CLIP's own context length works as well.
    assert_eq!(
        tokenizer(77).unwrap().encode(&["a ring".into()]).unwrap()[0].len(),
        77
    );
}

#[test]
fn image_folder_is_readable_by_the_image_loader() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let written = w.write_image_folder(dir.path(), TEST_START, 3).unwrap();
    assert_eq!(written.len(), 30);
    for class in CLASSES {
        let n = std::fs::read_dir(dir.path().join(class)).unwrap().count();
        assert_eq!(n, 3, "{class}");
    }
    let mut reader = csv::Reader::from_path(dir.path().join("captions.csv")).unwrap();
    assert_eq!(reader.headers().unwrap(), vec!["path", "caption"]);
    let rows: Vec<(String, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_string(), r[1].to_string())
        })
        .collect();
    assert_eq!(rows.len(), 30);
    let mut seen = BTreeMap::new();
    for ((path, caption), rec) in rows.iter().zip(&written) {
        let index: u64 = path
            .rsplit('/')
            .next()
            .unwrap()
            .trim_end_matches(".png")
            .parse()
            .unwrap();
        let s = w.sample(index);
        assert_eq!(path.split('/').next().unwrap(), CLASSES[s.class]);
        assert_eq!(caption, &s.caption);
        assert_eq!(rec.index, index);
        let img = rvpt::image::load_rgb(&dir.path().join(path)).unwrap();
        assert_eq!(img, s.image, "{path}: PNG must be lossless");
        *seen.entry(s.class).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 10);

    // A file where the folder should be is an error naming it.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = w.write_image_folder(&file, 0, 1).unwrap_err().to_string();
    assert!(err.contains("not-a-dir"), "{err}");
}

#[test]
fn captions_with_commas_survive_the_csv() {
    // Some templates contain commas; the manifest must quote them, not split them.
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let written = w.write_image_folder(dir.path(), 0, 10).unwrap();
    let with_comma: HashMap<String, String> = written
        .iter()
        .filter(|r| r.caption.contains(','))
        .map(|r| {
            (
                format!("{}/{:08}.png", CLASSES[r.class], r.index),
                r.caption.clone(),
            )
        })
        .collect();
    assert!(!with_comma.is_empty());
    let mut reader = csv::Reader::from_path(dir.path().join("captions.csv")).unwrap();
    for r in reader.records() {
        let r = r.unwrap();
        assert_eq!(r.len(), 2);
        if let Some(c) = with_comma.get(&r[0]) {
            assert_eq!(&r[1], c);
        }
    }
}
