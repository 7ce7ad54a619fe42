//! The WaNet noise grid: the one type that the warp ([`super::wanet`]) computes and that the grid
//! files ([`super::wanet_file`]) read and write, and the identity coordinates both lay it over.
//! The dependencies run one way: `wanet` uses `wanet_file` (for `grid=FILE`), both use this.

/// A WaNet noise grid, drawn or read from a file: `noise[(y * w + x) * 2 + c]`, c = 0 the
/// horizontal.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseGrid {
    pub h: usize,
    pub w: usize,
    pub noise: Vec<f32>,
}

/// `torch.linspace(-1, 1, n)` in f32, computed as torch does (from both ends towards the middle).
pub(crate) fn linspace_pm1(n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![-1.0];
    }
    let step = 2.0f32 / (n - 1) as f32;
    (0..n)
        .map(|i| {
            if i < n / 2 {
                -1.0 + step * i as f32
            } else {
                1.0 - step * (n - 1 - i) as f32
            }
        })
        .collect()
}
