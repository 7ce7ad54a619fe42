//! Seeded k-shot selection and epoch shuffling.
//!
//! Determinism: every random choice comes from a ChaCha8 generator keyed by
//! `seed.to_le_bytes() ‖ purpose tag (8 bytes) ‖ 16 zero bytes` and set to a stream: the class
//! index for k-shot selection (tag `b"k-shot\0\0"`), the epoch for shuffling (tag `b"shuffle\0"`).
//! A class's picks therefore depend only on the seed, the class index and which samples carry
//! that label, not on the other classes; the results are the same on every platform and stay so
//! as long as rand 0.9 / rand_chacha 0.9 keep their value-stability promise.

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What `k_shot` does with a class that has fewer than `k` samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooFew {
    /// Fail with `TooFewSamples` naming the class.
    Error,
    /// Take all of its samples (possibly none).
    TakeAll,
}

fn rng(seed: u64, tag: &[u8; 8], stream: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(tag);
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}

/// Picks `k` samples of every class: indices into `labels`, grouped by class (label order) and
/// ascending within a class. Selection is a partial Fisher–Yates shuffle of the class's indices
/// (in ascending order) drawing `random_range(i..n)` for `i = 0..k`.
pub fn k_shot(
    labels: &[usize],
    classes: &[String],
    k: usize,
    seed: u64,
    too_few: TooFew,
) -> Result<Vec<usize>> {
    if k == 0 {
        return Err(Error::Invalid("k-shot sampling needs k ≥ 1".into()));
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
    for (i, &label) in labels.iter().enumerate() {
        by_class
            .get_mut(label)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "sample {i} has label {label}, but there are only {} classes",
                    classes.len()
                ))
            })?
            .push(i);
    }
    let mut picked = Vec::with_capacity(k * classes.len());
    for (class, mut pool) in by_class.into_iter().enumerate() {
        if pool.len() < k && too_few == TooFew::Error {
            return Err(Error::TooFewSamples {
                class: classes[class].clone(),
                available: pool.len(),
                wanted: k,
            });
        }
        let take = k.min(pool.len());
        let mut r = rng(seed, b"k-shot\0\0", class as u64);
        for i in 0..take {
            let j = r.random_range(i..pool.len());
            pool.swap(i, j);
        }
        let mut chosen = pool[..take].to_vec();
        chosen.sort_unstable();
        picked.extend(chosen);
    }
    Ok(picked)
}

/// `indices` in a seeded random order for `epoch`: a full Fisher–Yates shuffle drawing
/// `random_range(0..=i)` for `i = n-1 down to 1`.
pub fn shuffled(indices: &[usize], seed: u64, epoch: u64) -> Vec<usize> {
    let mut out = indices.to_vec();
    let mut r = rng(seed, b"shuffle\0", epoch);
    for i in (1..out.len()).rev() {
        let j = r.random_range(0..=i);
        out.swap(i, j);
    }
    out
}

/// `n` of the indices `0..len` drawn at random (seeded, tag `b"subset\0\0"`), in ascending
/// order: a sample that spans a class-ordered folder instead of its first classes. `n >= len`
/// keeps every index.
pub fn random_subset(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut all: Vec<usize> = (0..len).collect();
    if n >= len {
        return all;
    }
    let mut r = rng(seed, b"subset\0\0", 0);
    for i in 0..n {
        let j = r.random_range(i..len);
        all.swap(i, j);
    }
    let mut picked = all[..n].to_vec();
    picked.sort_unstable();
    picked
}
