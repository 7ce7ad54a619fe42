//! Resize speed: Pillow-exact bicubic (the default) against the `image` crate's float cubic, on
//! photo-sized inputs to CLIP's 224 short side.
//!
//!     cargo run --release --example bench_resize [-- --iters 20]

mod common;
use common::arg;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iters: usize = arg(&args, "--iters", 20);
    for (w, h) in [(640u32, 480u32), (1920, 1080), (300, 200)] {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 13 % 256) as u8,
                ((x ^ y) % 256) as u8,
            ])
        });
        let time = |f: &dyn Fn() -> image::RgbImage| {
            let t0 = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(f());
            }
            t0.elapsed().as_secs_f64() / iters as f64 * 1e3
        };
        let pil = time(&|| rvpt::image::resize_shortest_edge(&img, 224));
        // What rvpt used before: the `image` crate's a = -0.5 cubic in f32 (within 2/255).
        let (ow, oh) = rvpt::image::shortest_edge_size(w, h, 224);
        let float = time(&|| {
            image::imageops::resize(&img, ow, oh, image::imageops::FilterType::CatmullRom)
        });
        println!("{w}x{h} → short side 224: Pillow-exact {pil:.2} ms, float {float:.2} ms");
    }
}
