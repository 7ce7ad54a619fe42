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

/// What both k-shot samplers start from: the indices of `labels` grouped by class (one list per
/// class, ascending) and the classes in order of first appearance; `k` checked.
fn group_by_class(
    labels: &[usize],
    classes: &[String],
    k: usize,
) -> Result<(Vec<Vec<usize>>, Vec<usize>)> {
    if k == 0 {
        return Err(Error::Invalid("k-shot sampling needs k ≥ 1".into()));
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
    let mut order = Vec::new();
    for (i, &label) in labels.iter().enumerate() {
        let items = by_class.get_mut(label).ok_or_else(|| {
            Error::Invalid(format!(
                "sample {i} has label {label}, but there are only {} classes",
                classes.len()
            ))
        })?;
        if items.is_empty() {
            order.push(label);
        }
        items.push(i);
    }
    Ok((by_class, order))
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
    let (by_class, _) = group_by_class(labels, classes, k)?;
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

/// Python's `random` module, as far as CoOp's k-shot sampling uses it: `random.seed(int)`
/// (MT19937 seeded by `init_by_array` with the seed's 32-bit words), `getrandbits`,
/// `_randbelow` and `random.sample`.
struct PythonRandom(rand_mt::Mt);

impl PythonRandom {
    fn seed(seed: u64) -> Self {
        let key: Vec<u32> = if seed >> 32 == 0 {
            vec![seed as u32]
        } else {
            vec![seed as u32, (seed >> 32) as u32]
        };
        Self(rand_mt::Mt::new_with_key(key))
    }

    /// `_randbelow(n)` for 1 ≤ n < 2^32: `getrandbits(n.bit_length())` until below `n`.
    fn below(&mut self, n: usize) -> usize {
        let bits = usize::BITS - n.leading_zeros();
        loop {
            let r = (self.0.next_u32() >> (32 - bits)) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// `random.sample(range(n), k)`: a partial pool shuffle for small `n`, rejection from a set
    /// otherwise, with Python's threshold between the two.
    fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut setsize = 21usize;
        if k > 5 {
            let exponent = ((k * 3) as f64).ln() / 4f64.ln();
            setsize += 4usize.pow(exponent.ceil() as u32);
        }
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            (0..k)
                .map(|i| {
                    let j = self.below(n - i);
                    let picked = pool[j];
                    pool[j] = pool[n - i - 1];
                    picked
                })
                .collect()
        } else {
            let mut selected = std::collections::HashSet::new();
            (0..k)
                .map(|_| loop {
                    let j = self.below(n);
                    if selected.insert(j) {
                        break j;
                    }
                })
                .collect()
        }
    }
}

/// CoOp's k-shot sampling (Dassl's `generate_fewshot_dataset` after `random.seed(seed)`), for
/// samples given in the data source's order (a CoOp split file's `train` list): classes in order
/// of first appearance, each class's `random.sample(items, k)` in the order drawn; a class with
/// fewer than `k` samples gives all of them (CoOp without `repeat`) or, with
/// [`TooFew::Error`], an error. Indices into `labels`, in CoOp's order.
pub fn k_shot_coop(
    labels: &[usize],
    classes: &[String],
    k: usize,
    seed: u64,
    too_few: TooFew,
) -> Result<Vec<usize>> {
    let (by_class, order) = group_by_class(labels, classes, k)?;
    let mut rng = PythonRandom::seed(seed);
    let mut picked = Vec::with_capacity(k * classes.len());
    for label in order {
        let items = &by_class[label];
        if items.len() < k {
            if too_few == TooFew::Error {
                return Err(Error::TooFewSamples {
                    class: classes[label].clone(),
                    available: items.len(),
                    wanted: k,
                });
            }
            picked.extend(items);
        } else {
            picked.extend(rng.sample(items.len(), k).into_iter().map(|j| items[j]));
        }
    }
    Ok(picked)
}
