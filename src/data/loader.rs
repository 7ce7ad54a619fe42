//! Parallel, ordered batch loading.
//!
//! A batch's images are decoded and preprocessed in parallel on rayon's pool, then stacked in
//! the order asked for. With prefetch on (the default) one background thread builds batch n+1
//! while the caller works on batch n, handing it over through a rendezvous channel, so at most
//! two batches exist at a time whatever the dataset's size.

use crate::error::{Error, Result};
use crate::image::{load_rgb, resize_and_crop, to_unit_tensor};
use candle_core::{Device, Tensor};
use image::RgbImage;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// What an unreadable image (missing, unreadable or undecodable file) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBadImage {
    /// The batch fails with the image's error (`Error::Image`, `MissingFile` or `Io`).
    #[default]
    Fail,
    /// The image is left out of its batch and recorded in [`Batches::skipped`].
    Skip,
}

/// What a preprocessing hook learns about the item it transforms.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// Index into the loader's samples.
    pub index: usize,
    pub path: &'a Path,
    pub label: usize,
}

type Hook = dyn Fn(RgbImage, &Item) -> Result<RgbImage> + Send + Sync;

/// Decoded RGB image → `size` x `size` RGB image. The batch tensor is then that image / 255.
#[derive(Clone)]
pub enum Transform {
    /// CLIP evaluation: shortest edge to `size` (bicubic), centre crop (`image::resize_and_crop`).
    Eval { size: u32 },
    /// Any other preprocessing, e.g. train-time augmentation. It runs on several threads in no
    /// fixed order, so randomness must come from the item (e.g. a generator seeded by its index
    /// and an epoch the closure captures), never from a shared generator.
    Custom { size: u32, hook: Arc<Hook> },
}

impl Transform {
    pub fn eval(size: u32) -> Self {
        Transform::Eval { size }
    }

    pub fn custom(
        size: u32,
        hook: impl Fn(RgbImage, &Item) -> Result<RgbImage> + Send + Sync + 'static,
    ) -> Self {
        Transform::Custom {
            size,
            hook: Arc::new(hook),
        }
    }

    /// Side of the square images it produces.
    pub fn size(&self) -> u32 {
        match self {
            Transform::Eval { size } | Transform::Custom { size, .. } => *size,
        }
    }

    fn apply(&self, img: RgbImage, item: &Item) -> Result<RgbImage> {
        let out = match self {
            Transform::Eval { size } => resize_and_crop(&img, *size),
            Transform::Custom { hook, .. } => hook(img, item)?,
        };
        let size = self.size();
        if out.dimensions() != (size, size) {
            return Err(Error::Invalid(format!(
                "preprocessing {} gave a {}x{} image, the loader expects {size}x{size}",
                item.path.display(),
                out.width(),
                out.height()
            )));
        }
        Ok(out)
    }
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transform::Eval { size } => write!(f, "Eval {{ size: {size} }}"),
            Transform::Custom { size, .. } => write!(f, "Custom {{ size: {size}, .. }}"),
        }
    }
}

/// A batch: `images` (B, 3, S, S) f32 in [0, 1], not normalised; `labels[i]` and `indices[i]`
/// (into the loader's samples) belong to `images[i]`.
#[derive(Debug, Clone)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Vec<usize>,
    pub indices: Vec<usize>,
}

/// An image left out under `OnBadImage::Skip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub index: usize,
    pub path: PathBuf,
    pub reason: String,
}

/// Everything a batch build needs; cheap to clone into the prefetch thread.
#[derive(Debug, Clone)]
struct Worker {
    samples: Arc<[(PathBuf, usize)]>,
    transform: Transform,
    device: Device,
    on_bad_image: OnBadImage,
}

/// One chunk's outcome: a batch (`None` if every image in it was skipped) and what was skipped.
type Built = (Option<Result<Batch>>, Vec<Skipped>);

impl Worker {
    fn build(&self, chunk: &[usize]) -> Built {
        let items: Vec<Result<std::result::Result<Tensor, Skipped>>> =
            chunk.par_iter().map(|&i| self.item(i)).collect();
        let (mut images, mut labels, mut indices, mut skipped) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (&i, item) in chunk.iter().zip(items) {
            match item {
                Err(e) => return (Some(Err(e)), skipped),
                Ok(Err(s)) => skipped.push(s),
                Ok(Ok(t)) => {
                    images.push(t);
                    labels.push(self.samples[i].1);
                    indices.push(i);
                }
            }
        }
        if images.is_empty() {
            return (None, skipped);
        }
        let stacked = Tensor::stack(&images, 0)
            .and_then(|t| t.to_device(&self.device))
            .map_err(Error::from)
            .map(|images| Batch {
                images,
                labels,
                indices,
            });
        (Some(stacked), skipped)
    }

    /// The (3, S, S) tensor of sample `i`, or why it was skipped.
    fn item(&self, i: usize) -> Result<std::result::Result<Tensor, Skipped>> {
        let (path, label) = &self.samples[i];
        let img = match load_rgb(path) {
            Ok(img) => img,
            Err(e) => {
                let unreadable = matches!(
                    e,
                    Error::Image { .. } | Error::MissingFile(_) | Error::Io { .. }
                );
                if unreadable && self.on_bad_image == OnBadImage::Skip {
                    return Ok(Err(Skipped {
                        index: i,
                        path: path.clone(),
                        reason: e.to_string(),
                    }));
                }
                return Err(e);
            }
        };
        crate::image::warn_if_far_from_size(path, img.dimensions(), self.transform.size());
        let item = Item {
            index: i,
            path,
            label: *label,
        };
        let img = self.transform.apply(img, &item)?;
        // Built on the CPU and moved once per batch: one transfer instead of B.
        Ok(Ok(to_unit_tensor(&img, &Device::Cpu)?))
    }
}

/// Loads `(path, label)` samples as batches of preprocessed images.
#[derive(Debug, Clone)]
pub struct Loader {
    worker: Worker,
    batch_size: usize,
    prefetch: bool,
}

impl Loader {
    /// Batches of up to `batch_size` images for `device`, with `OnBadImage::Fail` and prefetch on.
    pub fn new(
        samples: impl Into<Arc<[(PathBuf, usize)]>>,
        transform: Transform,
        batch_size: usize,
        device: &Device,
    ) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::Invalid("batch size must be at least 1".into()));
        }
        if transform.size() == 0 {
            return Err(Error::Invalid("image size must be at least 1".into()));
        }
        Ok(Self {
            worker: Worker {
                samples: samples.into(),
                transform,
                device: device.clone(),
                on_bad_image: OnBadImage::Fail,
            },
            batch_size,
            prefetch: true,
        })
    }

    pub fn on_bad_image(mut self, policy: OnBadImage) -> Self {
        self.worker.on_bad_image = policy;
        self
    }

    /// Whether a background thread prepares the next batch while the caller uses the current one.
    pub fn prefetch(mut self, on: bool) -> Self {
        self.prefetch = on;
        self
    }

    pub fn samples(&self) -> &[(PathBuf, usize)] {
        &self.worker.samples
    }

    pub fn len(&self) -> usize {
        self.worker.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.worker.samples.is_empty()
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Batches over the samples at `order` (e.g. a k-shot pick or an epoch's shuffle), in that
    /// order, `batch_size` positions of `order` per batch. Skipped images make a batch smaller;
    /// a batch whose images were all skipped is not yielded.
    pub fn batches(&self, order: Vec<usize>) -> Result<Batches> {
        let n = self.len();
        if let Some(&bad) = order.iter().find(|&&i| i >= n) {
            return Err(Error::Invalid(format!(
                "sample index {bad} is out of range: the loader has {n} samples"
            )));
        }
        let source = if self.prefetch {
            let (tx, rx) = sync_channel::<Built>(0);
            let worker = self.worker.clone();
            let size = self.batch_size;
            let handle = std::thread::Builder::new()
                .name("rvpt-loader".into())
                .spawn(move || {
                    for chunk in order.chunks(size) {
                        let built = worker.build(chunk);
                        let failed = matches!(built.0, Some(Err(_)));
                        // A closed channel means the caller dropped the iterator: stop.
                        if tx.send(built).is_err() || failed {
                            return;
                        }
                    }
                })
                .map_err(|e| Error::Invalid(format!("cannot start the loader thread: {e}")))?;
            Source::Prefetch {
                rx: Some(rx),
                handle: Some(handle),
            }
        } else {
            Source::Inline {
                worker: self.worker.clone(),
                order,
                next: 0,
                size: self.batch_size,
            }
        };
        Ok(Batches {
            source,
            skipped: Vec::new(),
            done: false,
        })
    }

    /// Batches over all samples, in order.
    pub fn all(&self) -> Result<Batches> {
        self.batches((0..self.len()).collect())
    }
}

enum Source {
    Inline {
        worker: Worker,
        order: Vec<usize>,
        next: usize,
        size: usize,
    },
    Prefetch {
        rx: Option<Receiver<Built>>,
        handle: Option<JoinHandle<()>>,
    },
}

/// The iterator of [`Loader::batches`]: `Result<Batch>` in order; after an error it ends.
pub struct Batches {
    source: Source,
    skipped: Vec<Skipped>,
    done: bool,
}

impl Batches {
    /// Images skipped so far (`OnBadImage::Skip`), in order; complete once iteration has ended.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    fn next_built(&mut self) -> Option<Built> {
        match &mut self.source {
            Source::Inline {
                worker,
                order,
                next,
                size,
            } => {
                if *next >= order.len() {
                    return None;
                }
                let end = (*next + *size).min(order.len());
                let built = worker.build(&order[*next..end]);
                *next = end;
                Some(built)
            }
            Source::Prefetch { rx, handle } => {
                let received = rx.as_ref().and_then(|rx| rx.recv().ok());
                if received.is_none() {
                    // The thread has finished; if it panicked, so does the caller.
                    if let Some(Err(panic)) = handle.take().map(JoinHandle::join) {
                        std::panic::resume_unwind(panic);
                    }
                }
                received
            }
        }
    }
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefetch = matches!(self.source, Source::Prefetch { .. });
        f.debug_struct("Batches")
            .field("prefetch", &prefetch)
            .field("skipped", &self.skipped.len())
            .field("done", &self.done)
            .finish()
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let Some((batch, skipped)) = self.next_built() else {
                self.done = true;
                break;
            };
            self.skipped.extend(skipped);
            match batch {
                None => continue,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(b)) => return Some(Ok(b)),
            }
        }
        None
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        if let Source::Prefetch { rx, handle } = &mut self.source {
            // Closing the channel first makes a thread waiting to hand over a batch return.
            drop(rx.take());
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}
