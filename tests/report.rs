//! The plots show what they plot: the legend beside the data (not over it), the series in the
//! colour-blind-safe Okabe–Ito colours, error bars where intervals are given.

use rvpt::report::{bar_plot, line_plot, BarSeries};

const LEGEND_X: u32 = 900 - 200;

fn pixels(path: &std::path::Path) -> image::RgbImage {
    image::open(path).unwrap().to_rgb8()
}

/// Pixels of exactly `rgb` left and right of the legend column.
fn count(img: &image::RgbImage, rgb: [u8; 3]) -> (usize, usize) {
    let (mut data, mut legend) = (0, 0);
    for (x, _, p) in img.enumerate_pixels() {
        if p.0 == rgb {
            if x < LEGEND_X {
                data += 1;
            } else {
                legend += 1;
            }
        }
    }
    (data, legend)
}

#[test]
fn bar_plots_have_the_legend_beside_the_data_and_error_bars() {
    let dir = tempfile::tempdir().unwrap();
    let cats = vec!["badnet".to_string(), "blended".to_string()];
    // Bars up to the top of the scale, where a legend inside the chart would sit.
    let series = |intervals: bool| {
        vec![
            BarSeries {
                name: "none".into(),
                values: vec![99.0, 95.0],
                intervals: intervals.then(|| vec![(97.0, 100.0), (92.0, 97.0)]),
            },
            BarSeries {
                name: "rvpt".into(),
                values: vec![57.0, f64::NAN],
                intervals: intervals.then(|| vec![(54.0, 60.0), (f64::NAN, f64::NAN)]),
            },
        ]
    };
    let with = dir.path().join("with.png");
    let without = dir.path().join("without.png");
    bar_plot(&with, "ASR", "case", "%", &cats, &series(true), 100.0).unwrap();
    bar_plot(&without, "ASR", "case", "%", &cats, &series(false), 100.0).unwrap();
    let (img, plain) = (pixels(&with), pixels(&without));
    // Okabe–Ito orange and sky blue: bars in the data, swatches in the legend column.
    for rgb in [[230, 159, 0], [86, 180, 233]] {
        let (data, legend) = count(&img, rgb);
        assert!(data > 1000, "{rgb:?}: {data} pixels of bars");
        assert!(legend > 50, "{rgb:?}: no legend swatch beside the data");
    }
    // The error bars are black lines over the bars: more black in the data area with them.
    let black = |i: &image::RgbImage| count(i, [0, 0, 0]).0;
    assert!(
        black(&img) > black(&plain) + 50,
        "{} vs {} black pixels: no error bars",
        black(&img),
        black(&plain)
    );
}

#[test]
fn loss_curves_keep_their_legend_out_of_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loss.png");
    let curves: Vec<(String, Vec<(f64, f64)>)> = (0..6)
        .map(|i| {
            (
                format!("case {i}"),
                (1..=50)
                    .map(|e| (e as f64, 2.0 - i as f64 * 0.1 - e as f64 * 0.01))
                    .collect(),
            )
        })
        .collect();
    line_plot(&path, "loss", "epoch", "loss", &curves, true).unwrap();
    let img = pixels(&path);
    // Six distinct palette colours, each drawn as a curve and as a legend swatch.
    for rgb in [
        [230, 159, 0],
        [86, 180, 233],
        [0, 158, 115],
        [0, 114, 178],
        [213, 94, 0],
        [204, 121, 167],
    ] {
        let (data, legend) = count(&img, rgb);
        assert!(data > 100 && legend > 20, "{rgb:?}: {data} / {legend}");
    }
}
