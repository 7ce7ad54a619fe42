//! Where a CLIP puts images and class texts, and where a trigger moves an image (issue 18, item 4:
//! why a linear probe on the toy cannot undo what it undoes on real CLIP).
//!
//!     cargo run --release --example geometry -- WEIGHTS DATA TRIGGER TARGET [TRIGGER_SEED]
//!
//! On unit embeddings of the test folder DATA (zero-shot text of "a photo of a {}."), one JSON
//! object:
//! - `matched_image_text`: mean cosine of an image with its own class's text (real ViT-B/32:
//!   about 0.3), `unmatched_image_text` with the other classes' texts;
//! - `image_image`, `text_text`: mean cosine between distinct images, between distinct classes'
//!   texts;
//! - `gap`: the distance between the mean image and the mean text embedding (Liang et al.,
//!   NeurIPS 2022, "Mind the Gap": about 0.82 for real CLIP);
//! - the trigger's mean shift `d` (triggered minus clean, images outside the target class), its
//!   length, and its cosine with the direction from those images' clean mean `m` to the target's
//!   text (`t - m`) and to the target's image centroid (`c - m`);
//! - what survives of an image's true class under the trigger (images outside the target class):
//!   `triggered_clean_cos`, the mean cosine of a triggered embedding with its clean one;
//!   `centroid_target_rate`, the share a nearest-clean-class-centroid classifier (a linear head
//!   fit on clean images, as a linear probe is) sends to the target; `centroid_true_class`, its
//!   accuracy when the target is ruled out; `triggered_true_class`, the accuracy of centroids of
//!   triggered embeddings (fit on even indices, read on odd), target ruled out: whether the true
//!   class can still be read linearly at all.
//! - `by_class`: per class outside the target, the zero-shot head's share sent to the target
//!   (ASR), the clean-centroid head's, its true-class accuracy and the triggered-clean cosine
//!   (a source-specific backdoor, `rvpt attack --poison-source`, met the trigger on one class).

use candle_core::{DType, Device, Tensor, D};
use rvpt::attacks::Trigger;
use rvpt::data::{ImageFolder, Loader, Transform};
use rvpt::engine::Engine;
use rvpt::text::Templates;

fn cos(a: &Tensor, b: &Tensor) -> rvpt::Result<f64> {
    let dot = (a * b)?.sum_all()?.to_scalar::<f32>()?;
    let na = a.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    let nb = b.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    Ok(f64::from(dot / (na * nb)))
}

/// Mean of the off-diagonal entries of a square (n, n) matrix.
fn off_diagonal_mean(m: &Tensor) -> rvpt::Result<f64> {
    let n = m.dim(0)?;
    let total = m.sum_all()?.to_scalar::<f32>()? as f64;
    let diag = m
        .to_vec2::<f32>()?
        .iter()
        .enumerate()
        .map(|(i, r)| r[i] as f64)
        .sum::<f64>();
    Ok((total - diag) / (n * (n - 1)) as f64)
}

/// Normalised mean of each class's rows (`None` for a class without rows).
fn centroids(rows: &[Vec<f32>], labels: &[usize], classes: usize) -> Vec<Option<Vec<f32>>> {
    let mut sums = vec![vec![0f32; rows.first().map_or(0, Vec::len)]; classes];
    let mut counts = vec![0usize; classes];
    for (row, &label) in rows.iter().zip(labels) {
        counts[label] += 1;
        for (s, v) in sums[label].iter_mut().zip(row) {
            *s += v;
        }
    }
    sums.into_iter()
        .zip(counts)
        .map(|(s, n)| {
            let norm = s.iter().map(|v| v * v).sum::<f32>().sqrt();
            (n > 0 && norm > 0.0).then(|| s.iter().map(|v| v / norm).collect())
        })
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The class whose centroid has the largest dot product with `row`, skipping `excluded`.
fn nearest(row: &[f32], centroids: &[Option<Vec<f32>>], excluded: Option<usize>) -> usize {
    let mut best = (f32::NEG_INFINITY, 0);
    for (c, centroid) in centroids.iter().enumerate() {
        if Some(c) == excluded {
            continue;
        }
        if let Some(centroid) = centroid {
            let d = dot(row, centroid);
            if d > best.0 {
                best = (d, c);
            }
        }
    }
    best.1
}

/// Per class outside the target: zero-shot ASR, clean-centroid head to target and true class,
/// triggered-clean cosine.
fn by_class(
    clean: &[Vec<f32>],
    triggered: &[Vec<f32>],
    text: &[Vec<f32>],
    labels: &[usize],
    names: &[String],
    target: usize,
) -> serde_json::Value {
    let clean_centroids = centroids(clean, labels, names.len());
    let text: Vec<Option<Vec<f32>>> = text.iter().cloned().map(Some).collect();
    let mut out = serde_json::Map::new();
    for (class, name) in names.iter().enumerate().filter(|&(c, _)| c != target) {
        let rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        let n = rows.len().max(1) as f64;
        let share = |f: &dyn Fn(usize) -> bool| rows.iter().filter(|&&i| f(i)).count() as f64 / n;
        out.insert(
            name.clone(),
            serde_json::json!({
                "images": rows.len(),
                "zero_shot_target": share(&|i| nearest(&triggered[i], &text, None) == target),
                "centroid_target": share(&|i| nearest(&triggered[i], &clean_centroids, None) == target),
                "centroid_true_class":
                    share(&|i| nearest(&triggered[i], &clean_centroids, Some(target)) == class),
                "triggered_clean_cos":
                    rows.iter().map(|&i| f64::from(dot(&triggered[i], &clean[i]))).sum::<f64>() / n,
            }),
        );
    }
    serde_json::Value::Object(out)
}

/// What of the true class survives the trigger, on images outside the target class.
fn survival(
    clean: &[Vec<f32>],
    triggered: &[Vec<f32>],
    labels: &[usize],
    classes: usize,
    target: usize,
) -> rvpt::Result<serde_json::Value> {
    let clean_centroids = centroids(clean, labels, classes);
    let others: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] != target).collect();
    let n = others.len() as f64;
    let (mut cos_sum, mut to_target, mut true_class) = (0f64, 0usize, 0usize);
    for &i in &others {
        // Unit rows: the dot product is the cosine.
        cos_sum += f64::from(dot(&triggered[i], &clean[i]));
        to_target += usize::from(nearest(&triggered[i], &clean_centroids, None) == target);
        true_class +=
            usize::from(nearest(&triggered[i], &clean_centroids, Some(target)) == labels[i]);
    }
    // Centroids of triggered embeddings: fit on even positions, read on odd ones.
    let (fit, read): (Vec<usize>, Vec<usize>) = others.iter().partition(|&&i| i % 2 == 0);
    let fit_rows: Vec<Vec<f32>> = fit.iter().map(|&i| triggered[i].clone()).collect();
    let fit_labels: Vec<usize> = fit.iter().map(|&i| labels[i]).collect();
    let triggered_centroids = centroids(&fit_rows, &fit_labels, classes);
    let readable = read
        .iter()
        .filter(|&&i| nearest(&triggered[i], &triggered_centroids, Some(target)) == labels[i])
        .count();
    Ok(serde_json::json!({
        "triggered_clean_cos": cos_sum / n,
        "centroid_target_rate": to_target as f64 / n,
        "centroid_true_class": true_class as f64 / n,
        "triggered_true_class": readable as f64 / read.len().max(1) as f64,
    }))
}

fn run() -> rvpt::Result<serde_json::Value> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        return Err(rvpt::Error::Invalid(
            "usage: geometry WEIGHTS DATA TRIGGER TARGET [TRIGGER_SEED]".into(),
        ));
    }
    let seed: u64 = args
        .get(4)
        .map_or(Ok(7), |s| s.parse())
        .map_err(|_| rvpt::Error::Invalid(format!("trigger seed `{}` is not a number", args[4])))?;
    let engine = Engine::load(&args[0], &Device::Cpu, DType::F32)?;
    let trigger = Trigger::parse(&args[2])?;
    engine.weights.check_trigger(&trigger, seed)?;
    let folder = ImageFolder::open(std::path::Path::new(&args[1]), None)?;
    let target = folder.class_index(&args[3])?;
    let encoder = engine.encoder(None)?;
    let zs = engine.zero_shot(encoder.as_ref(), folder.classes(), Templates::Single)?;
    let loader = Loader::new(
        folder.samples().to_vec(),
        Transform::eval(engine.image_size()),
        256,
        &Device::Cpu,
    )?;
    let (mut clean, mut triggered, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for batch in loader.all()? {
        let batch = batch?;
        let n = batch.labels.len();
        let poisoned = (0..n)
            .map(|b| trigger.apply(&batch.images.get(b)?, seed, batch.indices[b] as u64))
            .collect::<rvpt::Result<Vec<_>>>()?;
        let embed = |images: &Tensor| -> rvpt::Result<Tensor> {
            let features = zs.encoder.features(&zs.pixels(images)?)?;
            zs.embed(&features)
        };
        clean.push(embed(&batch.images)?);
        triggered.push(embed(&Tensor::stack(&poisoned, 0)?)?);
        labels.extend(batch.labels);
    }
    let (clean, triggered) = (Tensor::cat(&clean, 0)?, Tensor::cat(&triggered, 0)?);
    let text = &zs.text;
    let classes = text.dim(0)?;
    // Image-text cosines: matched (own class) and unmatched.
    let sims = clean.matmul(&text.t()?)?.to_vec2::<f32>()?;
    let (mut matched, mut unmatched) = (0f64, 0f64);
    for (row, &label) in sims.iter().zip(&labels) {
        for (c, &v) in row.iter().enumerate() {
            if c == label {
                matched += v as f64;
            } else {
                unmatched += v as f64;
            }
        }
    }
    let n = labels.len() as f64;
    let image_mean = clean.mean(0)?;
    let text_mean = text.mean(0)?;
    let gap = (&image_mean - &text_mean)?
        .sqr()?
        .sum_all()?
        .sqrt()?
        .to_scalar::<f32>()?;
    // The trigger's shift, on the images outside the target class.
    let others: Vec<u32> = (0..labels.len())
        .filter(|&i| labels[i] != target)
        .map(|i| i as u32)
        .collect();
    let ours: Vec<u32> = (0..labels.len())
        .filter(|&i| labels[i] == target)
        .map(|i| i as u32)
        .collect();
    let pick = |t: &Tensor, idx: &[u32]| -> rvpt::Result<Tensor> {
        let idx = Tensor::from_vec(idx.to_vec(), idx.len(), &Device::Cpu)?;
        Ok(t.index_select(&idx, 0)?)
    };
    let start = pick(&clean, &others)?.mean(0)?;
    let shift = (pick(&triggered, &others)? - pick(&clean, &others)?)?.mean(0)?;
    let centroid = pick(&clean, &ours)?.mean(0)?;
    let target_text = text.get(target)?;
    let length = shift.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    let (clean_rows, triggered_rows) = (clean.to_vec2::<f32>()?, triggered.to_vec2::<f32>()?);
    let survival = survival(&clean_rows, &triggered_rows, &labels, classes, target)?;
    let by_class = by_class(
        &clean_rows,
        &triggered_rows,
        &text.to_vec2::<f32>()?,
        &labels,
        folder.classes(),
        target,
    );
    Ok(serde_json::json!({
        "survival": survival,
        "by_class": by_class,
        "weights": engine.weights.source,
        "images": labels.len(),
        "classes": classes,
        "matched_image_text": matched / n,
        "unmatched_image_text": unmatched / (n * (classes - 1) as f64),
        "image_image": off_diagonal_mean(&clean.matmul(&clean.t()?)?)?,
        "text_text": off_diagonal_mean(&text.matmul(&text.t()?)?)?,
        "gap": gap,
        "trigger": args[2],
        "shift_length": length,
        "shift_cos_target_text": cos(&shift, &(&target_text - &start)?)?,
        "shift_cos_target_images": cos(&shift, &(&centroid - &start)?)?,
        "mean_image_norm": image_mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.to_vec1::<f32>()?[0],
    }))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(v) => {
            println!("{v}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
