//! PNG plots: plotters rendering into a buffer, encoded by the `image` crate and written
//! atomically, text in the embedded DejaVu Sans so no system font is needed.

use crate::error::{Error, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

const W: u32 = 900;
const H: u32 = 500;
static FONTS: Once = Once::new();

fn fonts() {
    FONTS.call_once(|| {
        // A failure here only costs the text of the plots; the bars and lines still draw.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("cannot draw {}: {e}", path.display()))
}

fn save_png(buf: Vec<u8>, path: &Path) -> Result<()> {
    let img = image::RgbImage::from_raw(W, H, buf)
        .ok_or_else(|| Error::Invalid("plot buffer has the wrong size".into()))?;
    crate::fsio::write_with(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", tmp.display())))
    })
}

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The Okabe–Ito palette (colour-blind safe), black last.
const PALETTE: [RGBColor; 8] = [
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
enum Swatch {
    Line,
    Box,
}

/// Width of the legend column right of the data (none without a legend).
const LEGEND_W: u32 = 200;

/// Renders one chart into a PNG: the caption, the axes (`draw` adds the mesh and the series),
/// and, with `legend`, the series names in a column right of the data, where they hide nothing.
fn render(
    path: &Path,
    title: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    legend: Option<(&[String], Swatch)>,
    draw: impl FnOnce(&mut Chart) -> Result<()>,
) -> Result<()> {
    fonts();
    let mut buf = vec![255u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let root = root
            .titled(title, ("sans-serif", 22))
            .map_err(|e| plot_err(path, e))?;
        let (area, side) = match legend {
            Some(_) => root.split_horizontally(W - LEGEND_W),
            None => root.split_horizontally(W),
        };
        let mut chart = ChartBuilder::on(&area)
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(x, y)
            .map_err(|e| plot_err(path, e))?;
        draw(&mut chart)?;
        if let Some((names, swatch)) = legend {
            for (i, name) in names.iter().enumerate() {
                let y = 30 + 24 * i as i32;
                let c = colour(i);
                match swatch {
                    Swatch::Line => {
                        side.draw(&PathElement::new(vec![(8, y), (30, y)], c.stroke_width(3)))
                    }
                    Swatch::Box => {
                        side.draw(&Rectangle::new([(10, y - 7), (26, y + 7)], c.filled()))
                    }
                }
                .map_err(|e| plot_err(path, e))?;
                side.draw(&Text::new(
                    name.clone(),
                    (38, y - 8),
                    ("sans-serif", 15).into_font().color(&BLACK),
                ))
                .map_err(|e| plot_err(path, e))?;
            }
        }
        root.present().map_err(|e| plot_err(path, e))?;
    }
    save_png(buf, path)
}

/// Lines of (x, y) points, one per named series. With `integer_x` (epochs) the x ticks are
/// whole numbers.
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    integer_x: bool,
) -> Result<()> {
    let pts = series.iter().flat_map(|(_, s)| s.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return Err(Error::Invalid(format!(
            "nothing to plot in {}",
            path.display()
        )));
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let names: Vec<String> = series.iter().map(|s| s.0.clone()).collect();
    let span = (x1 - x0).max(1.0);
    let ticks = if integer_x {
        (span as usize + 1).min(11)
    } else {
        11
    };
    render(
        path,
        title,
        x0..x0 + span,
        (y0 - pad)..(y1 + pad),
        Some((&names, Swatch::Line)),
        |chart| {
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .x_labels(ticks)
                .x_label_formatter(&|x| {
                    if integer_x {
                        if (x - x.round()).abs() < 1e-6 {
                            format!("{:.0}", x)
                        } else {
                            String::new()
                        }
                    } else {
                        format!("{x:.2}")
                    }
                })
                .draw()
                .map_err(|e| plot_err(path, e))?;
            for (i, (_, s)) in series.iter().enumerate() {
                chart
                    .draw_series(LineSeries::new(
                        s.iter()
                            .copied()
                            .filter(|(x, y)| x.is_finite() && y.is_finite()),
                        colour(i).stroke_width(2),
                    ))
                    .map_err(|e| plot_err(path, e))?;
            }
            Ok(())
        },
    )
}

/// One named series of a bar chart: a value per category (NaN: no bar) and, optionally, its
/// interval (drawn as an error bar).
pub struct BarSeries {
    pub name: String,
    pub values: Vec<f64>,
    pub intervals: Option<Vec<(f64, f64)>>,
}

/// Grouped bars: one group per category, one bar per series (values in [0, y_max]), each
/// labelled with its value, with its interval as an error bar when given.
pub fn bar_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    categories: &[String],
    series: &[BarSeries],
    y_max: f64,
) -> Result<()> {
    let n = categories.len().max(1) as f64;
    let k = series.len().max(1) as f64;
    let names: Vec<String> = series.iter().map(|s| s.name.clone()).collect();
    // Head room for the value labels.
    let top = y_max * 1.08;
    render(
        path,
        title,
        0.0..n,
        0.0..top,
        Some((&names, Swatch::Box)),
        |chart| {
            let cats = categories.to_vec();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(categories.len() * 2 + 1)
                .x_label_formatter(&move |x| centre_label(&cats, *x))
                .x_desc(x_label)
                .y_desc(y_label)
                .draw()
                .map_err(|e| plot_err(path, e))?;
            let width = 0.8 / k;
            // Small labels when many bars share a group.
            let font = if series.len() * categories.len() > 24 {
                10
            } else {
                12
            };
            for (j, s) in series.iter().enumerate() {
                let c = colour(j);
                for (i, &v) in s.values.iter().enumerate() {
                    if !v.is_finite() {
                        continue;
                    }
                    let x = i as f64 + 0.1 + j as f64 * width;
                    let mid = x + width * 0.45;
                    let bar = Rectangle::new([(x, 0.0), (x + width * 0.9, v.max(0.0))], c.filled());
                    chart.draw_series([bar]).map_err(|e| plot_err(path, e))?;
                    let mut label_y = v.max(0.0);
                    if let Some((lo, hi)) = s.intervals.as_ref().and_then(|iv| iv.get(i)) {
                        let cap = width * 0.2;
                        let lines = [
                            vec![(mid, *lo), (mid, *hi)],
                            vec![(mid - cap, *lo), (mid + cap, *lo)],
                            vec![(mid - cap, *hi), (mid + cap, *hi)],
                        ];
                        chart
                            .draw_series(
                                lines
                                    .into_iter()
                                    .map(|l| PathElement::new(l, BLACK.stroke_width(1))),
                            )
                            .map_err(|e| plot_err(path, e))?;
                        label_y = label_y.max(*hi);
                    }
                    let text = Text::new(
                        format!("{v:.1}"),
                        (x, label_y + top * 0.035),
                        ("sans-serif", font).into_font().color(&BLACK),
                    );
                    chart.draw_series([text]).map_err(|e| plot_err(path, e))?;
                }
            }
            Ok(())
        },
    )
}

/// Blue (negative) – white – red (positive), `t` in [-1, 1].
fn diverging(t: f64) -> RGBColor {
    let t = t.clamp(-1.0, 1.0);
    let fade = |c: u8| (255.0 - (255.0 - c as f64) * t.abs()).round() as u8;
    if t >= 0.0 {
        RGBColor(fade(200), fade(30), fade(30))
    } else {
        RGBColor(fade(30), fade(70), fade(200))
    }
}

/// A grid of signed values, one row per `rows` label (first row at the top) and one column per
/// `columns` label, coloured on a diverging scale symmetric around zero, each cell printed.
/// Rows in `framed` get a black frame (e.g. the blocks the prompts act in). Colours saturate at
/// ±`saturate` (default: the largest magnitude), so that two maps can share one scale.
pub fn heat_map(
    path: &Path,
    title: &str,
    rows: &[String],
    columns: &[String],
    values: &[Vec<f64>],
    framed: std::ops::Range<usize>,
    saturate: Option<f64>,
) -> Result<()> {
    if rows.is_empty() || columns.is_empty() || values.len() != rows.len() {
        return Err(Error::Invalid(format!(
            "nothing to draw in {}: {} rows of values for {} labels",
            path.display(),
            values.len(),
            rows.len()
        )));
    }
    let max = saturate
        .unwrap_or_else(|| {
            values
                .iter()
                .flatten()
                .filter(|v| v.is_finite())
                .fold(0f64, |m, v| m.max(v.abs()))
        })
        .max(1e-12);
    let (nr, nc) = (rows.len() as f64, columns.len() as f64);
    let (rows_l, cols_l) = (rows.to_vec(), columns.to_vec());
    render(path, title, 0.0..nc, 0.0..nr, None, |chart| {
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(columns.len() * 2 + 1)
            .y_labels(rows.len() * 2 + 1)
            .x_label_formatter(&move |x| centre_label(&cols_l, *x))
            // Row 0 is drawn at the top.
            .y_label_formatter(&move |y| centre_label(&rows_l, nr - *y))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for (r, row) in values.iter().enumerate() {
            let y = nr - r as f64;
            for (c, &v) in row.iter().enumerate() {
                let x = c as f64;
                let cell =
                    Rectangle::new([(x, y - 1.0), (x + 1.0, y)], diverging(v / max).filled());
                let text = Text::new(
                    format!("{v:.2}"),
                    (x + 0.2, y - 0.35),
                    ("sans-serif", 13).into_font().color(&BLACK),
                );
                chart.draw_series([cell]).map_err(|e| plot_err(path, e))?;
                chart.draw_series([text]).map_err(|e| plot_err(path, e))?;
            }
        }
        if !framed.is_empty() {
            let (top, bottom) = (nr - framed.start as f64, nr - framed.end as f64);
            let frame = Rectangle::new([(0.0, bottom), (nc, top)], BLACK.stroke_width(3));
            chart.draw_series([frame]).map_err(|e| plot_err(path, e))?;
        }
        Ok(())
    })
}

/// The label of the cell whose centre is at `x` (cells are unit wide), else "".
fn centre_label(labels: &[String], x: f64) -> String {
    if (x - x.floor() - 0.5).abs() < 0.1 {
        labels.get(x.floor() as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}
