//! Reports: JSON written atomically, and PNG plots (plotters rendering into a buffer, encoded by
//! the `image` crate, text in the embedded DejaVu Sans so no system font is needed).

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

/// Pretty JSON, written through a temporary file and a rename.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Invalid(format!("cannot serialise {}: {e}", path.display())))?;
    crate::model::init::write_atomic(path, text.as_bytes())
}

fn save_png(buf: Vec<u8>, path: &Path) -> Result<()> {
    let img = image::RgbImage::from_raw(W, H, buf)
        .ok_or_else(|| Error::Invalid("plot buffer has the wrong size".into()))?;
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The frame every plot shares: a white canvas, a titled chart over `x` × `y`, whatever `draw`
/// adds, the legend (when asked for), then the PNG.
fn render(
    path: &Path,
    title: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    legend: bool,
    draw: impl FnOnce(&mut Chart) -> Result<()>,
) -> Result<()> {
    fonts();
    let mut buf = vec![255u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x, y)
            .map_err(|e| plot_err(path, e))?;
        draw(&mut chart)?;
        if legend {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| plot_err(path, e))?;
        }
        root.present().map_err(|e| plot_err(path, e))?;
    }
    save_png(buf, path)
}

/// Lines of (x, y) points, one per named series.
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
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
    render(
        path,
        title,
        x0..x1.max(x0 + 1.0),
        (y0 - pad)..(y1 + pad),
        true,
        |chart| {
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .draw()
                .map_err(|e| plot_err(path, e))?;
            for (i, (name, s)) in series.iter().enumerate() {
                let colour = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(s.iter().copied(), colour.stroke_width(2)))
                    .map_err(|e| plot_err(path, e))?
                    .label(name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
            }
            Ok(())
        },
    )
}

/// Grouped bars: one group per category, one bar per named series (values in [0, y_max]).
pub fn bar_plot(
    path: &Path,
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
    y_max: f64,
) -> Result<()> {
    let n = categories.len().max(1) as f64;
    let k = series.len().max(1) as f64;
    render(path, title, 0.0..n, 0.0..y_max, true, |chart| {
        let cats = categories.to_vec();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(categories.len() * 2 + 1)
            .x_label_formatter(&move |x| centre_label(&cats, *x))
            .y_desc(y_label)
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for (j, (name, values)) in series.iter().enumerate() {
            let colour = Palette99::pick(j).to_rgba();
            let width = 0.8 / k;
            let bars = values.iter().enumerate().map(move |(i, &v)| {
                let x = i as f64 + 0.1 + j as f64 * width;
                Rectangle::new([(x, 0.0), (x + width * 0.9, v.max(0.0))], colour.filled())
            });
            chart
                .draw_series(bars)
                .map_err(|e| plot_err(path, e))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                });
        }
        Ok(())
    })
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
    render(path, title, 0.0..nc, 0.0..nr, false, |chart| {
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
