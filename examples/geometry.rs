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
//!   text (`t - m`) and to the target's image centroid (`c - m`).

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
    Ok(serde_json::json!({
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
