//! Datasets, k-shot sampling and the batch loader, on small image trees written at test time.

mod common;

use candle_core::{Device, Tensor};
use image::{Rgb, RgbImage};
use rvpt::data::{
    k_shot, shuffled, CaptionManifest, ImageFolder, LabeledManifest, Loader, OnBadImage, TooFew,
    Transform,
};
use rvpt::image::{load_rgb, resize_and_crop, to_unit_tensor};
use rvpt::Error;
use std::fs;
use std::path::{Path, PathBuf};

/// A small RGB image whose pixels depend on `seed`, so no two test images are alike.
fn write_png(path: &Path, w: u32, h: u32, seed: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = RgbImage::from_fn(w, h, |x, y| {
        let v = |k: u32| ((x * (7 + k) + y * (13 + seed) + seed * 31 + k * 50) % 256) as u8;
        Rgb([v(0), v(1), v(2)])
    });
    // The extension may be .jpg/.webp in listing tests: save as PNG bytes whatever the name.
    img.save_with_format(path, image::ImageFormat::Png).unwrap();
}

fn touch(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// Classes `mango`, `Apple`, `zebra` (+ noise that must be ignored); returns the tempdir.
fn class_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write_png(&r.join("zebra/z1.png"), 8, 8, 1);
    write_png(&r.join("mango/b.png"), 9, 7, 2);
    write_png(&r.join("mango/a.PNG"), 7, 9, 3);
    write_png(&r.join("mango/c.JpG"), 6, 6, 4);
    write_png(&r.join("mango/sub/d.webp"), 6, 6, 5);
    write_png(&r.join("mango/sub-x/e.jpeg"), 6, 6, 6);
    touch(&r.join("mango/notes.txt"), b"not an image");
    touch(&r.join("mango/._a.png"), b"resource fork");
    write_png(&r.join("Apple/x.png"), 5, 5, 7);
    write_png(&r.join(".ipynb_checkpoints/y.png"), 5, 5, 8);
    touch(&r.join("README.txt"), b"a file beside the class folders");
    dir
}

fn names(paths: &[(PathBuf, usize)], root: &Path) -> Vec<(String, usize)> {
    paths
        .iter()
        .map(|(p, l)| {
            let rel = p.strip_prefix(root).unwrap();
            (rel.to_string_lossy().replace('\\', "/"), *l)
        })
        .collect()
}

#[test]
fn image_folder_orders_like_torchvision() {
    let dir = class_tree();
    let ds = ImageFolder::open(dir.path(), None).unwrap();
    // Byte order, as Python's sorted(): upper case first.
    assert_eq!(ds.classes(), ["Apple", "mango", "zebra"]);
    assert_eq!(ds.folders(), ds.classes());
    // Files of a directory sorted by name, directories in the byte order of their paths, as
    // torchvision's sorted(os.walk(...)): `mango/sub` (a prefix) before `mango/sub-x`. Checked
    // once against torchvision 0.29's make_dataset on the same tree.
    let want = [
        ("Apple/x.png", 0),
        ("mango/a.PNG", 1),
        ("mango/b.png", 1),
        ("mango/c.JpG", 1),
        ("mango/sub/d.webp", 1),
        ("mango/sub-x/e.jpeg", 1),
        ("zebra/z1.png", 2),
    ];
    let got = names(ds.samples(), dir.path());
    let want: Vec<(String, usize)> = want.iter().map(|(p, l)| (p.to_string(), *l)).collect();
    assert_eq!(got, want);
    assert_eq!(ds.len(), 7);
    assert_eq!(ds.labels(), vec![0, 1, 1, 1, 1, 1, 2]);
    assert_eq!(ds.class_index("zebra").unwrap(), 2);
}

#[test]
fn classnames_file_one_name_per_line() {
    let dir = class_tree();
    let file = dir.path().join("names.txt");
    // CRLF line ends and blank lines are tolerated.
    touch(&file, b"an apple\r\n\r\nripe mango\r\nplains zebra\r\n\r\n");
    let ds = ImageFolder::open(dir.path(), Some(&file)).unwrap();
    assert_eq!(ds.classes(), ["an apple", "ripe mango", "plains zebra"]);
    assert_eq!(ds.class_index("ripe mango").unwrap(), 1);
    assert_eq!(
        ds.class_index("zebra").unwrap(),
        2,
        "folder names still resolve"
    );

    touch(&file, b"an apple\nripe mango\n");
    match ImageFolder::open(dir.path(), Some(&file)) {
        Err(Error::Config { path, reason }) => {
            assert_eq!(path, file);
            assert!(
                reason.contains("2 class names for 3 class folders"),
                "{reason}"
            );
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
}

#[test]
fn classnames_file_folder_tab_name() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("n02/a.png"), 4, 4, 1);
    write_png(&dir.path().join("n01/a.png"), 4, 4, 2);
    let file = dir.path().join("map.tsv");
    // Imagenette style: more synsets than folders, any order.
    touch(
        &file,
        b"n03\tchain saw\nn02\tEnglish springer\nn01\ttench\n",
    );
    let ds = ImageFolder::open(dir.path(), Some(&file)).unwrap();
    assert_eq!(ds.folders(), ["n01", "n02"]);
    assert_eq!(ds.classes(), ["tench", "English springer"]);
    assert_eq!(ds.class_index("n02").unwrap(), 1);

    touch(&file, b"n02\tEnglish springer\n");
    let err = ImageFolder::open(dir.path(), Some(&file)).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("`n01`"), "{err}");

    touch(&file, b"n01\ttench\nEnglish springer\n");
    match ImageFolder::open(dir.path(), Some(&file)).unwrap_err() {
        Error::BadRow { line, .. } => assert_eq!(line, 2),
        other => panic!("expected BadRow, got {other:?}"),
    }
}

#[test]
fn image_folder_errors_name_their_cause() {
    let dir = class_tree();
    fs::create_dir_all(dir.path().join("kiwi/empty-sub")).unwrap();
    touch(&dir.path().join("kiwi/list.txt"), b"no images here");
    match ImageFolder::open(dir.path(), None).unwrap_err() {
        Error::EmptyClass { class, folder } => {
            assert_eq!(class, "kiwi");
            assert_eq!(folder, dir.path().join("kiwi"));
        }
        other => panic!("expected EmptyClass, got {other:?}"),
    }

    let missing = dir.path().join("nope");
    match ImageFolder::open(&missing, None).unwrap_err() {
        Error::MissingFile(p) => assert_eq!(p, missing),
        other => panic!("expected MissingFile, got {other:?}"),
    }

    let flat = tempfile::tempdir().unwrap();
    write_png(&flat.path().join("a.png"), 4, 4, 1);
    let err = ImageFolder::open(flat.path(), None).unwrap_err();
    assert!(err.to_string().contains("no class sub-folders"), "{err}");
}

#[test]
fn unknown_class_lists_valid_names() {
    let dir = class_tree();
    let ds = ImageFolder::open(dir.path(), None).unwrap();
    let err = ds.class_index("banana").unwrap_err();
    match &err {
        Error::UnknownClass { name, valid } => {
            assert_eq!(name, "banana");
            assert_eq!(valid, &["Apple", "mango", "zebra"]);
        }
        other => panic!("expected UnknownClass, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("`banana`") && msg.contains("Apple, mango, zebra"),
        "{msg}"
    );
}

#[test]
fn labeled_manifest_resolves_paths_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("lists/train.csv");
    let abs = dir.path().join("elsewhere/abs.png");
    let text = format!(
        "path,label\nimgs/a.png,dog\n../up.png, cat \n{},dog\n",
        abs.display()
    );
    touch(&csv, text.as_bytes());
    let m = LabeledManifest::open(&csv, None).unwrap();
    assert_eq!(m.classes(), ["cat", "dog"], "distinct names, sorted");
    let base = dir.path().join("lists");
    let want = vec![
        (base.join("imgs/a.png"), 1),
        (base.join("../up.png"), 0),
        (abs.clone(), 1),
    ];
    assert_eq!(m.samples(), want.as_slice());

    // With a class list: names or indices into it; extra columns and column order are free.
    let classes: Vec<String> = ["cat", "dog", "fox"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    touch(
        &csv,
        b"label,note,PATH\nfox,x,a.png\n0,y,b.png\n2,z,c.png\n",
    );
    let m = LabeledManifest::open(&csv, Some(&classes)).unwrap();
    assert_eq!(m.labels(), vec![2, 0, 2]);
    assert_eq!(m.samples()[1].0, base.join("b.png"));

    // Without one, integer labels are indices.
    touch(&csv, b"path,label\na.png,3\nb.png,1\n");
    let m = LabeledManifest::open(&csv, None).unwrap();
    assert_eq!(m.classes(), ["0", "1", "2", "3"]);
    assert_eq!(m.labels(), vec![3, 1]);
}

fn bad_row(result: rvpt::Result<impl std::fmt::Debug>) -> (u64, String) {
    match result {
        Err(Error::BadRow { line, reason, .. }) => (line, reason),
        other => panic!("expected BadRow, got {other:?}"),
    }
}

#[test]
fn manifest_bad_rows_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("m.csv");
    let classes: Vec<String> = vec!["cat".into(), "dog".into()];

    touch(&csv, b"path,label\na.png,cat\nb.png\nc.png,dog\n");
    let (line, reason) = bad_row(LabeledManifest::open(&csv, None));
    assert_eq!(line, 3, "{reason}");

    touch(&csv, b"path,label\na.png,cat\nb.png,dog\nc.png,cow\n");
    let (line, reason) = bad_row(LabeledManifest::open(&csv, Some(&classes)));
    assert_eq!(line, 4);
    assert!(
        reason.contains("`cow`") && reason.contains("cat, dog"),
        "{reason}"
    );

    touch(&csv, b"path,label\na.png,5\n");
    let (line, _) = bad_row(LabeledManifest::open(&csv, Some(&classes)));
    assert_eq!(line, 2, "index out of range");

    touch(&csv, b"file,label\na.png,cat\n");
    let (line, reason) = bad_row(LabeledManifest::open(&csv, None));
    assert_eq!(line, 1);
    assert!(reason.contains("`path`"), "{reason}");

    touch(&csv, b"path,caption\na.png,\"a cat, sitting\"\n,a dog\n");
    let (line, reason) = bad_row(CaptionManifest::open(&csv));
    assert_eq!(line, 3);
    assert!(reason.contains("empty path"), "{reason}");

    touch(&csv, b"path,caption\n");
    let (line, _) = bad_row(CaptionManifest::open(&csv));
    assert_eq!(line, 1);

    let missing = dir.path().join("none.csv");
    assert!(matches!(
        CaptionManifest::open(&missing),
        Err(Error::MissingFile(p)) if p == missing
    ));
}

#[test]
fn caption_manifest_reads_quoted_captions() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("cc/captions.csv");
    touch(
        &csv,
        b"path,caption\nimg/1.jpg,\"a cat, on a mat\"\nimg/2.jpg,\"she said \"\"hi\"\"\"\n",
    );
    let m = CaptionManifest::open(&csv).unwrap();
    let base = dir.path().join("cc");
    assert_eq!(
        m.items(),
        [
            (base.join("img/1.jpg"), "a cat, on a mat".to_string()),
            (base.join("img/2.jpg"), "she said \"hi\"".to_string()),
        ]
    );
}

fn class_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("class{i}")).collect()
}

/// 4 classes, interleaved, with 10, 7, 5 and 12 samples.
fn toy_labels() -> Vec<usize> {
    let counts = [10, 7, 5, 12];
    let mut labels = Vec::new();
    for round in 0..12 {
        for (c, &n) in counts.iter().enumerate() {
            if round < n {
                labels.push(c);
            }
        }
    }
    labels
}

#[test]
fn k_shot_is_seeded_and_exact() {
    let labels = toy_labels();
    let classes = class_names(4);
    let a = k_shot(&labels, &classes, 3, 7, TooFew::Error).unwrap();
    let b = k_shot(&labels, &classes, 3, 7, TooFew::Error).unwrap();
    let c = k_shot(&labels, &classes, 3, 8, TooFew::Error).unwrap();
    assert_eq!(a, b, "same seed, same picks");
    assert_ne!(a, c, "another seed, other picks");
    assert_eq!(a.len(), 12);
    for class in 0..4 {
        let picks: Vec<usize> = a[class * 3..class * 3 + 3].to_vec();
        assert!(
            picks.iter().all(|&i| labels[i] == class),
            "grouped by class"
        );
        assert!(picks.windows(2).all(|w| w[0] < w[1]), "distinct, ascending");
    }

    // A class's picks do not depend on the other classes.
    let mut fewer = labels.clone();
    fewer.truncate(labels.iter().rposition(|&l| l == 0).unwrap() + 1);
    let only = k_shot(&fewer, &classes, 3, 7, TooFew::TakeAll).unwrap();
    assert_eq!(&only[..3], &a[..3]);
}

#[test]
fn k_shot_too_few() {
    let labels = toy_labels();
    let classes = class_names(4);
    match k_shot(&labels, &classes, 6, 1, TooFew::Error).unwrap_err() {
        Error::TooFewSamples {
            class,
            available,
            wanted,
        } => assert_eq!((class.as_str(), available, wanted), ("class2", 5, 6)),
        other => panic!("expected TooFewSamples, got {other:?}"),
    }
    let all = k_shot(&labels, &classes, 6, 1, TooFew::TakeAll).unwrap();
    assert_eq!(all.len(), 6 + 6 + 5 + 6);
    let class2: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == 2).collect();
    assert_eq!(&all[12..17], class2.as_slice());

    assert!(k_shot(&labels, &classes, 0, 1, TooFew::Error).is_err());
    let err = k_shot(&[0, 4], &class_names(2), 1, 0, TooFew::Error).unwrap_err();
    assert!(err.to_string().contains("label 4"), "{err}");
}

/// Every sample of a class is picked with probability k/n: 4000 seeds, 5 samples, k = 2.
#[test]
fn k_shot_picks_uniformly() {
    let labels = vec![0usize; 5];
    let classes = class_names(1);
    let mut counts = [0usize; 5];
    let seeds = 4000;
    for seed in 0..seeds {
        for i in k_shot(&labels, &classes, 2, seed, TooFew::Error).unwrap() {
            counts[i] += 1;
        }
    }
    for (i, &c) in counts.iter().enumerate() {
        let p = c as f64 / seeds as f64;
        // sd of the estimate is sqrt(.4 * .6 / 4000) = 0.0077: 0.04 is > 5 sd.
        assert!(
            (p - 0.4).abs() < 0.04,
            "sample {i} picked with frequency {p}"
        );
    }
}

#[test]
fn shuffled_is_a_seeded_permutation() {
    let idx: Vec<usize> = (100..150).collect();
    let a = shuffled(&idx, 3, 0);
    assert_eq!(a, shuffled(&idx, 3, 0));
    assert_ne!(a, shuffled(&idx, 3, 1), "each epoch its own order");
    assert_ne!(a, shuffled(&idx, 4, 0));
    assert_ne!(a, idx);
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, idx);

    // First position uniform over 4 items across 4000 epochs.
    let mut first = [0usize; 4];
    for epoch in 0..4000 {
        first[shuffled(&[0, 1, 2, 3], 9, epoch)[0]] += 1;
    }
    assert!(
        first
            .iter()
            .all(|&c| (c as f64 / 4000.0 - 0.25).abs() < 0.04),
        "{first:?}"
    );
}

const SIZE: u32 = 12;

/// 9 images of assorted shapes (larger, smaller and equal to SIZE), labels i % 3.
fn loader_samples(root: &Path) -> Vec<(PathBuf, usize)> {
    let shapes = [
        (20, 15),
        (12, 12),
        (7, 30),
        (40, 40),
        (9, 9),
        (16, 25),
        (30, 8),
        (13, 12),
        (5, 5),
    ];
    shapes
        .iter()
        .enumerate()
        .map(|(i, &(w, h))| {
            let p = root.join(format!("img{i}.png"));
            write_png(&p, w, h, i as u32 + 10);
            (p, i % 3)
        })
        .collect()
}

fn sequential(path: &Path) -> Tensor {
    let img = resize_and_crop(&load_rgb(path).unwrap(), SIZE);
    to_unit_tensor(&img, &Device::Cpu).unwrap()
}

#[test]
fn loader_batches_equal_sequential_preprocessing() {
    let dir = tempfile::tempdir().unwrap();
    let samples = loader_samples(dir.path());
    let order = vec![4, 0, 8, 2, 7, 1, 6];
    for prefetch in [true, false] {
        let loader = Loader::new(samples.clone(), Transform::eval(SIZE), 3, &Device::Cpu)
            .unwrap()
            .prefetch(prefetch);
        let mut batches = loader.batches(order.clone()).unwrap();
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        for batch in batches.by_ref() {
            let batch = batch.unwrap();
            assert_eq!(batch.images.dims()[1..], [3, SIZE as usize, SIZE as usize]);
            sizes.push(batch.indices.len());
            for (k, &i) in batch.indices.iter().enumerate() {
                assert_eq!(batch.labels[k], samples[i].1);
                let want = sequential(&samples[i].0);
                let got = batch.images.get(k).unwrap();
                assert_eq!(common::max_abs_diff(&got, &want), 0.0, "image {i}");
            }
            seen.extend(batch.indices);
        }
        assert_eq!(seen, order, "order preserved (prefetch {prefetch})");
        assert_eq!(sizes, vec![3, 3, 1]);
        assert!(batches.skipped().is_empty());
    }
    let all: Vec<usize> = Loader::new(samples, Transform::eval(SIZE), 4, &Device::Cpu)
        .unwrap()
        .all()
        .unwrap()
        .flat_map(|b| b.unwrap().indices)
        .collect();
    assert_eq!(all, (0..9).collect::<Vec<_>>());
}

#[test]
fn loader_fail_or_skip_on_bad_images() {
    let dir = tempfile::tempdir().unwrap();
    let mut samples = loader_samples(dir.path());
    let corrupt = dir.path().join("corrupt.png");
    touch(&corrupt, b"\x89PNG\r\n\x1a\n this is not a png");
    samples[5].0 = corrupt.clone();
    let gone = dir.path().join("gone.png");
    samples[6].0 = gone.clone();

    for prefetch in [true, false] {
        let loader = Loader::new(samples.clone(), Transform::eval(SIZE), 2, &Device::Cpu)
            .unwrap()
            .prefetch(prefetch);
        // Fail (the default): the first two batches arrive, the third names the corrupt file.
        let results: Vec<_> = loader.all().unwrap().collect();
        assert_eq!(results.len(), 3, "iteration ends after the error");
        assert!(results[0].is_ok() && results[1].is_ok());
        match &results[2] {
            Err(Error::Image { path, .. }) => assert_eq!(path, &corrupt),
            other => panic!("expected Error::Image, got {other:?}"),
        }

        // Skip: both bad items are dropped and reported, the rest keep their order.
        let loader = loader.on_bad_image(OnBadImage::Skip);
        let mut batches = loader.batches(vec![5, 6, 0, 1, 6, 2]).unwrap();
        let got: Vec<Vec<usize>> = batches.by_ref().map(|b| b.unwrap().indices).collect();
        assert_eq!(
            got,
            vec![vec![0, 1], vec![2]],
            "an all-bad batch is not yielded"
        );
        let skipped = batches.skipped();
        let paths: Vec<&PathBuf> = skipped.iter().map(|s| &s.path).collect();
        assert_eq!(paths, [&corrupt, &gone, &gone]);
        assert_eq!(skipped[0].index, 5);
        assert!(
            skipped[0].reason.contains("cannot decode"),
            "{}",
            skipped[0].reason
        );
        assert!(
            skipped[1].reason.contains("not found"),
            "{}",
            skipped[1].reason
        );
    }
}

#[test]
fn loader_custom_transform_hook() {
    let dir = tempfile::tempdir().unwrap();
    let samples = loader_samples(dir.path());
    // A stand-in augmentation: centre crop, then mirror odd-indexed items. It sleeps longer
    // for early items so parallel completion order differs from batch order.
    let hook = Transform::custom(SIZE, |img, item| {
        std::thread::sleep(std::time::Duration::from_millis(10 - item.index as u64));
        let img = resize_and_crop(&img, SIZE);
        Ok(if item.index % 2 == 1 {
            image::imageops::flip_horizontal(&img)
        } else {
            img
        })
    });
    let loader = Loader::new(samples.clone(), hook, 5, &Device::Cpu).unwrap();
    let order: Vec<usize> = (0..9).rev().collect();
    let mut seen = Vec::new();
    for batch in loader.batches(order.clone()).unwrap() {
        let batch = batch.unwrap();
        for (k, &i) in batch.indices.iter().enumerate() {
            let mut img = resize_and_crop(&load_rgb(&samples[i].0).unwrap(), SIZE);
            if i % 2 == 1 {
                img = image::imageops::flip_horizontal(&img);
            }
            let want = to_unit_tensor(&img, &Device::Cpu).unwrap();
            assert_eq!(
                common::max_abs_diff(&batch.images.get(k).unwrap(), &want),
                0.0
            );
        }
        seen.extend(batch.indices);
    }
    assert_eq!(seen, order);

    // A hook that returns the wrong size is an error, not a silently ragged batch.
    let wrong = Transform::custom(SIZE, |img, _| Ok(resize_and_crop(&img, SIZE + 1)));
    let loader = Loader::new(samples, wrong, 5, &Device::Cpu).unwrap();
    let err = loader.all().unwrap().next().unwrap().unwrap_err();
    assert!(err.to_string().contains("13x13"), "{err}");
}

#[test]
fn loader_arguments_and_early_drop() {
    let dir = tempfile::tempdir().unwrap();
    let samples = loader_samples(dir.path());
    assert!(Loader::new(samples.clone(), Transform::eval(SIZE), 0, &Device::Cpu).is_err());
    let loader = Loader::new(samples, Transform::eval(SIZE), 2, &Device::Cpu).unwrap();
    let err = loader.batches(vec![0, 9]).unwrap_err();
    assert!(err.to_string().contains("index 9"), "{err}");
    // Dropping a prefetching iterator midway must return (the thread sees the closed channel).
    let mut batches = loader.all().unwrap();
    assert!(batches.next().unwrap().is_ok());
    drop(batches);
}

#[test]
fn random_subset_is_seeded_sorted_and_spans_the_range() {
    use rvpt::data::random_subset;
    let a = random_subset(1000, 50, 0);
    assert_eq!(a, random_subset(1000, 50, 0));
    assert_ne!(a, random_subset(1000, 50, 1));
    assert_eq!(a.len(), 50);
    assert!(a.windows(2).all(|w| w[0] < w[1]), "ascending, no repeats");
    assert!(*a.last().unwrap() > 500, "not the first indices: {a:?}");
    assert_eq!(random_subset(5, 9, 0), [0, 1, 2, 3, 4]);
    assert!(random_subset(5, 0, 0).is_empty());
}

/// ImageNet's `train/n01440764/…` folders get CLIP's class names without being asked, or with
/// `--classnames imagenet`; other folders keep their names.
#[test]
fn imagenet_synset_folders_get_clip_class_names() {
    let dir = tempfile::tempdir().unwrap();
    for (i, synset) in ["n01443537", "n01440764", "n15075141"].iter().enumerate() {
        write_png(&dir.path().join(synset).join("a.png"), 8, 8, i as u32);
    }
    let f = ImageFolder::open(dir.path(), None).unwrap();
    assert_eq!(f.classes(), ["tench", "goldfish", "toilet paper"]);
    assert_eq!(f.class_index("goldfish").unwrap(), 1);
    let g = ImageFolder::open(dir.path(), Some(Path::new(rvpt::data::IMAGENET))).unwrap();
    assert_eq!(g.classes(), f.classes());
    assert_eq!(rvpt::data::IMAGENET_CLASSNAMES.lines().count(), 1000);
    write_png(&dir.path().join("not-a-synset").join("a.png"), 8, 8, 9);
    let h = ImageFolder::open(dir.path(), None).unwrap();
    assert_eq!(h.classes()[3], "not-a-synset");
    assert_eq!(
        h.classes()[0],
        "n01440764",
        "a mixed tree keeps folder names"
    );
}

/// CoOp's split files (OxfordPets: images/ next to the file; Caltech101: class sub-folders of
/// 101_ObjectCategories/): `file.json#split` reads a split, labels and class names as written.
#[test]
fn coop_split_files_read_like_coop() {
    let dir = tempfile::tempdir().unwrap();
    let pets = dir.path().join("oxford_pets");
    for (i, f) in [
        "Abyssinian_1.jpg",
        "american_bulldog_2.jpg",
        "Abyssinian_3.jpg",
    ]
    .iter()
    .enumerate()
    {
        write_png(&pets.join("images").join(f), 8, 8, i as u32);
    }
    let split = serde_json::json!({
        "train": [["american_bulldog_2.jpg", 1, "american_bulldog"], ["Abyssinian_1.jpg", 0, "abyssinian"]],
        "val": [],
        "test": [["Abyssinian_3.jpg", 0, "abyssinian"], ["american_bulldog_2.jpg", 1, "american_bulldog"]]
    });
    let file = pets.join("split_zhou_OxfordPets.json");
    std::fs::write(&file, split.to_string()).unwrap();
    let spec = format!("{}#train", file.display());
    let f = ImageFolder::open(Path::new(&spec), None).unwrap();
    assert_eq!(f.classes(), ["abyssinian", "american bulldog"]);
    let got = names(f.samples(), &pets.join("images"));
    assert_eq!(
        got,
        [
            ("Abyssinian_1.jpg".to_string(), 0),
            ("american_bulldog_2.jpg".to_string(), 1)
        ]
    );

    let cal = dir.path().join("caltech-101");
    write_png(
        &cal.join("101_ObjectCategories/accordion/image_0001.jpg"),
        8,
        8,
        5,
    );
    let file = cal.join("split_zhou_Caltech101.json");
    std::fs::write(
        &file,
        r#"{"train": [], "val": [], "test": [["accordion/image_0001.jpg", 0, "accordion"]]}"#,
    )
    .unwrap();
    let f = ImageFolder::open(Path::new(&format!("{}#test", file.display())), None).unwrap();
    assert_eq!(f.classes(), ["accordion"]);
    assert!(f.samples()[0]
        .0
        .ends_with("101_ObjectCategories/accordion/image_0001.jpg"));

    // Named errors: an unknown split, an empty one, a label with two names.
    let err = |spec: String| {
        ImageFolder::open(Path::new(&spec), None)
            .unwrap_err()
            .to_string()
    };
    assert!(err(format!("{}#dev", file.display())).contains("no `dev` list"));
    assert!(err(format!("{}#train", file.display())).contains("empty"));
    std::fs::write(
        &file,
        r#"{"test": [["accordion/image_0001.jpg", 0, "accordion"], ["accordion/image_0001.jpg", 0, "banjo"]]}"#,
    )
    .unwrap();
    assert!(err(format!("{}#test", file.display())).contains("label 0 is `accordion` and `banjo`"));
}

/// CoOp's k-shot subsets, drawn by Python's `random` after `random.seed(seed)`, are reproduced
/// index for index (tests/reference/make_coop_kshot.py): pool and set paths of `random.sample`,
/// classes with fewer than k, a 64-bit seed.
#[test]
fn coop_k_shot_matches_python_random() {
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("coop_kshot.json")).unwrap())
            .unwrap();
    for case in cases {
        let labels: Vec<usize> = serde_json::from_value(case["labels"].clone()).unwrap();
        let want: Vec<usize> = serde_json::from_value(case["picked"].clone()).unwrap();
        let (k, seed) = (
            case["k"].as_u64().unwrap() as usize,
            case["seed"].as_u64().unwrap(),
        );
        let n = labels.iter().max().unwrap() + 1;
        let classes: Vec<String> = (0..n).map(|c| format!("c{c}")).collect();
        let got = rvpt::data::k_shot_coop(&labels, &classes, k, seed, TooFew::TakeAll).unwrap();
        assert_eq!(got, want, "k {k}, seed {seed}, {} samples", labels.len());
        let too_few = labels.len() / n < k;
        assert_eq!(
            rvpt::data::k_shot_coop(&labels, &classes, k, seed, TooFew::Error).is_err(),
            too_few
        );
    }
}
