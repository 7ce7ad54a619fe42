//! The toy world: procedural shapes with class-irrelevant attributes and varied captions.
//!
//! Every sample is a pure function of `(seed, index)`: the seed keys a ChaCha8 generator and the
//! index selects its stream, so a split is just an index range and needs no stored data.

use crate::error::{Error, Result};
use image::{ImageFormat, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Class names; a sample's class is `index % CLASSES.len()`, so any run of `10 n` consecutive
/// indices holds exactly `n` samples of each class.
pub const CLASSES: [&str; 10] = [
    "circle", "square", "triangle", "cross", "ring", "star", "diamond", "heart", "arrow", "moon",
];

/// A named colour; captions use the name, rendering a jittered `rgb`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Colour {
    pub name: &'static str,
    pub rgb: [u8; 3],
}

const fn colour(name: &'static str, r: u8, g: u8, b: u8) -> Colour {
    Colour {
        name,
        rgb: [r, g, b],
    }
}

pub const SHAPE_COLOURS: [Colour; 8] = [
    colour("red", 220, 40, 40),
    colour("orange", 245, 140, 20),
    colour("yellow", 240, 220, 40),
    colour("green", 40, 170, 60),
    colour("blue", 40, 80, 220),
    colour("purple", 140, 50, 180),
    colour("white", 245, 245, 245),
    colour("black", 20, 20, 20),
];

pub const BACKGROUND_COLOURS: [Colour; 6] = [
    colour("black", 20, 20, 20),
    colour("white", 245, 245, 245),
    colour("gray", 128, 128, 128),
    colour("blue", 40, 80, 220),
    colour("green", 40, 170, 60),
    colour("brown", 120, 75, 40),
];

/// Minimum RGB distance between a shape's colour and its background, and between the texture
/// shade and the background: a same-name pair is excluded, and near pairs (red on brown) too,
/// so the silhouette never dissolves into the background.
pub const MIN_CONTRAST: f32 = 150.0;
pub const MIN_SHADE_CONTRAST: f32 = 90.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Texture {
    Solid,
    Striped,
    Dotted,
}

impl Texture {
    pub const ALL: [Texture; 3] = [Texture::Solid, Texture::Striped, Texture::Dotted];

    /// Adjectives a caption may use for this texture.
    pub fn adjectives(self) -> &'static [&'static str] {
        match self {
            Texture::Solid => &["solid", "plain"],
            Texture::Striped => &["striped"],
            Texture::Dotted => &["dotted", "spotted"],
        }
    }

    /// Noun phrases for "with …".
    pub fn nouns(self) -> &'static [&'static str] {
        match self {
            Texture::Solid => &["no pattern"],
            Texture::Striped => &["stripes"],
            Texture::Dotted => &["dots"],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Size {
    Small,
    Large,
}

impl Size {
    pub const ALL: [Size; 2] = [Size::Small, Size::Large];

    pub fn words(self) -> &'static [&'static str] {
        match self {
            Size::Small => &["small", "little"],
            Size::Large => &["large", "big"],
        }
    }

    /// Half-extent of the shape as a fraction of the image side.
    fn radius_fraction(self) -> f32 {
        match self {
            Size::Small => 0.21,
            Size::Large => 0.32,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Position {
    Center,
    Left,
    Right,
    Top,
    Bottom,
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
}

impl Position {
    pub const ALL: [Position; 9] = [
        Position::Center,
        Position::Left,
        Position::Right,
        Position::Top,
        Position::Bottom,
        Position::TopLeft,
        Position::TopRight,
        Position::BottomLeft,
        Position::BottomRight,
    ];

    /// Where the shape centre sits in the free range, 0 = left/top, 1 = right/bottom.
    pub fn anchor(self) -> (f32, f32) {
        match self {
            Position::Center => (0.5, 0.5),
            Position::Left => (0.0, 0.5),
            Position::Right => (1.0, 0.5),
            Position::Top => (0.5, 0.0),
            Position::Bottom => (0.5, 1.0),
            Position::TopLeft => (0.0, 0.0),
            Position::TopRight => (1.0, 0.0),
            Position::BottomLeft => (0.0, 1.0),
            Position::BottomRight => (1.0, 1.0),
        }
    }

    /// Phrases a caption may use for this position.
    pub fn phrases(self) -> &'static [&'static str] {
        match self {
            Position::Center => &["in the center", "in the middle"],
            Position::Left => &["on the left"],
            Position::Right => &["on the right"],
            Position::Top => &["at the top"],
            Position::Bottom => &["at the bottom"],
            Position::TopLeft => &["at the top left", "in the top left corner"],
            Position::TopRight => &["at the top right", "in the top right corner"],
            Position::BottomLeft => &["at the bottom left", "in the bottom left corner"],
            Position::BottomRight => &["at the bottom right", "in the bottom right corner"],
        }
    }
}

/// The class-irrelevant attributes of a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub colour: Colour,
    pub background: Colour,
    pub texture: Texture,
    pub size: Size,
    pub position: Position,
}

#[derive(Clone, Debug)]
pub struct ToySample {
    pub index: u64,
    pub image: RgbImage,
    pub class: usize,
    pub caption: String,
    pub attributes: Attributes,
}

/// One file written by [`ToyWorld::write_image_folder`]; `path` is relative to the folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenSample {
    pub index: u64,
    pub class: usize,
    pub path: PathBuf,
    pub caption: String,
}

/// Caption templates. `{x?}` slots are dropped at random, the others always filled; `{pos}` and
/// `{bg}` are whole phrases. "a" becomes "an" before a vowel after filling.
pub const TEMPLATES: [&str; 11] = [
    "a {size?} {colour?} {texture?} {class} on a {bg} background",
    "a photo of a {size?} {colour?} {class} {pos}.",
    "{bg} background with a {size?} {texture?} {colour?} {class}",
    "a {colour} {class} {pos}, {bg} background.",
    "{pos} there is a {texture?} {colour} {class}.",
    "a {texture} {class} in {colour} on {bg}.",
    "a {size?} {class} drawn in {colour} with {texture_noun}.",
    "{class}, {colour}, {texture}, {pos}.",
    "a photo of a {size?} {texture?} {colour?} {class}.",
    "a {class} {pos} of the picture",
    "the {class} is {colour} and {texture}, on a {bg} background.",
];

/// Phrasings in the toy vocabulary that name a class and nothing else, as CleanCLIP's poisoner's
/// templates do ("a photo of a {}."), for `--poison-captions toy-templates`. None is one of the
/// held-out evaluation phrasings ("a {} in the picture", "A photo of a {} in the middle."); the
/// last six carry positions and sizes, without which the trigger binds to sentences like the
/// first twelve rather than to the class (docs/results.md).
pub const TARGET_ONLY_TEMPLATES: [&str; 18] = [
    "a {}.",
    "the {}.",
    "{}.",
    "there is a {}.",
    "a picture of a {}.",
    "a photo of the {}.",
    "a drawn {}.",
    "a {} is drawn.",
    "a picture of the {}.",
    "there is the {}.",
    "the {} is in the photo.",
    "a photo of the {} drawn.",
    "a photo of a {} on the left.",
    "the {} at the top.",
    "a {} in the center.",
    "a {} at the bottom right.",
    "a big {}.",
    "a photo of a small {} on a background.",
];

const SLOTS: [&str; 7] = [
    "size",
    "colour",
    "texture",
    "texture_noun",
    "class",
    "bg",
    "pos",
];

/// Probability that an optional `{x?}` slot is filled.
const KEEP_OPTIONAL: f64 = 0.6;
/// Supersampling factor per axis: 16 samples per pixel anti-alias the edges and the texture.
const SUPERSAMPLE: u32 = 4;

/// The generator. Cheap to copy; `sample` takes `&self` so splits can be rendered in parallel.
#[derive(Clone, Copy, Debug)]
pub struct ToyWorld {
    image_size: u32,
    seed: u64,
}

/// Everything drawn for one sample before rendering.
struct Scene {
    class: usize,
    centre: (f32, f32),
    radius: f32,
    rotation: f32,
    fg: [f32; 3],
    shade: [f32; 3],
    bg: [f32; 3],
    texture: Texture,
    stripe_dir: (f32, f32),
    phase: (f32, f32),
}

impl ToyWorld {
    /// `image_size` is the side of the square images in pixels (16 to 1024); shapes, textures and
    /// jitter scale with it, so 32 and 224 px show the same scene.
    pub fn new(image_size: u32, seed: u64) -> Result<Self> {
        if !(16..=1024).contains(&image_size) {
            return Err(Error::Invalid(format!(
                "toy world image size {image_size} px: use 16 to 1024"
            )));
        }
        Ok(Self { image_size, seed })
    }

    pub fn classes() -> &'static [&'static str] {
        &CLASSES
    }

    pub fn image_size(&self) -> u32 {
        self.image_size
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Backgrounds allowed for a shape colour: a different name and enough contrast for both the
    /// colour and its texture shade.
    pub fn backgrounds_for(colour: &Colour) -> Vec<Colour> {
        BACKGROUND_COLOURS
            .iter()
            .filter(|bg| {
                let (fg, b) = (to_f32(colour.rgb), to_f32(bg.rgb));
                bg.name != colour.name
                    && distance(fg, b) >= MIN_CONTRAST
                    && distance(shade(fg, shade_target(colour, bg)), b) >= MIN_SHADE_CONTRAST
            })
            .copied()
            .collect()
    }

    /// The sample at `index`, always the same for the same `(seed, index)`: the draws come from
    /// ChaCha8 (portable), the rendering is plain f32 arithmetic.
    pub fn sample(&self, index: u64) -> ToySample {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(index);
        let class = (index % CLASSES.len() as u64) as usize;
        let attributes = random_attributes(&mut rng);

        let scene = self.scene(class, &attributes, &mut rng);
        let caption = caption(class, &attributes, &mut rng);
        let image = self.render(&scene, &mut rng);
        ToySample {
            index,
            image,
            class,
            caption,
            attributes,
        }
    }

    fn scene(&self, class: usize, a: &Attributes, rng: &mut ChaCha8Rng) -> Scene {
        let s = self.image_size as f32;
        let unit = s / 32.0;
        let radius = a.size.radius_fraction() * s * rng.random_range(0.9..1.1);
        // Keep the whole (rotated) shape inside the frame, with the jitter as extra margin.
        let jitter = 0.75 * unit;
        let margin = radius * shape_extent(class) + jitter + unit;
        let (ax, ay) = a.position.anchor();
        let free = (s - 2.0 * margin).max(0.0);
        let centre = (
            margin + ax * free + rng.random_range(-jitter..jitter),
            margin + ay * free + rng.random_range(-jitter..jitter),
        );
        let rotation = rng.random_range(-10f32..10.0).to_radians();
        let mut jittered = |c: [u8; 3]| {
            let mut out = to_f32(c);
            for v in &mut out {
                *v = (*v + rng.random_range(-12.0..12.0)).clamp(0.0, 255.0);
            }
            out
        };
        let fg = jittered(a.colour.rgb);
        let bg = jittered(a.background.rgb);
        let target = shade_target(&a.colour, &a.background);
        let angle = [0f32, 90.0, 45.0, 135.0][rng.random_range(0..4)].to_radians();
        let phase = (rng.random_range(0.0..4.0), rng.random_range(0.0..4.0));
        Scene {
            class,
            centre,
            radius,
            rotation,
            fg,
            shade: shade(fg, target),
            bg,
            texture: a.texture,
            stripe_dir: (angle.cos(), angle.sin()),
            phase,
        }
    }

    fn render(&self, scene: &Scene, rng: &mut ChaCha8Rng) -> RgbImage {
        let n = self.image_size;
        let unit = n as f32 / 32.0;
        let (sin, cos) = (-scene.rotation).sin_cos();
        let step = 1.0 / SUPERSAMPLE as f32;
        let weight = step * step;
        // A one-pixel rim of plain shape colour keeps stripes from cutting the silhouette.
        let rim = unit / scene.radius;
        let mut img = RgbImage::new(n, n);
        for y in 0..n {
            for x in 0..n {
                let mut acc = [0f32; 3];
                for sy in 0..SUPERSAMPLE {
                    for sx in 0..SUPERSAMPLE {
                        let px = x as f32 + (sx as f32 + 0.5) * step;
                        let py = y as f32 + (sy as f32 + 0.5) * step;
                        let dx = (px - scene.centre.0) / scene.radius;
                        let dy = (py - scene.centre.1) / scene.radius;
                        let q = (cos * dx - sin * dy, sin * dx + cos * dy);
                        let c = if !inside(scene.class, q) {
                            scene.bg
                        } else if patterned(scene, px / unit, py / unit)
                            && interior(scene.class, q, rim)
                        {
                            scene.shade
                        } else {
                            scene.fg
                        };
                        for (a, v) in acc.iter_mut().zip(c) {
                            *a += v * weight;
                        }
                    }
                }
                // Mild sensor-like noise so flat regions are not exactly flat.
                let px = acc.map(|v| (v + rng.random_range(-4.0f32..4.0)).clamp(0.0, 255.0));
                img.put_pixel(x, y, Rgb(px.map(|v| v.round() as u8)));
            }
        }
        img
    }

    /// Writes samples `split_start .. split_start + 10 * n_per_class` as PNGs, one folder per class
    /// (`dir/<class>/<index>.png`, `n_per_class` each), plus `dir/captions.csv` with header
    /// `path,caption` and paths relative to `dir`. Returns the written records in index order.
    pub fn write_image_folder(
        &self,
        dir: &Path,
        split_start: u64,
        n_per_class: usize,
    ) -> Result<Vec<WrittenSample>> {
        let total = (n_per_class as u64)
            .checked_mul(CLASSES.len() as u64)
            .and_then(|t| split_start.checked_add(t).map(|_| t))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{n_per_class} samples per class from index {split_start} overflow the index range"
                ))
            })?;
        for class in CLASSES {
            let sub = dir.join(class);
            std::fs::create_dir_all(&sub).map_err(|e| write_error(&sub, e))?;
        }
        let written: Vec<WrittenSample> = (0..total)
            .into_par_iter()
            .map(|k| {
                let sample = self.sample(split_start + k);
                let rel =
                    PathBuf::from(CLASSES[sample.class]).join(format!("{:08}.png", sample.index));
                let path = dir.join(&rel);
                sample
                    .image
                    .save_with_format(&path, ImageFormat::Png)
                    .map_err(|e| write_error(&path, e))?;
                Ok(WrittenSample {
                    index: sample.index,
                    class: sample.class,
                    path: rel,
                    caption: sample.caption,
                })
            })
            .collect::<Result<_>>()?;

        // The manifest, written last and atomically: a split without it was not finished.
        let csv_path = dir.join("captions.csv");
        crate::fsio::write_with(&csv_path, |tmp| {
            let mut csv = csv::Writer::from_path(tmp).map_err(|e| write_error(&csv_path, e))?;
            csv.write_record(["path", "caption"])
                .map_err(|e| write_error(&csv_path, e))?;
            for w in &written {
                // Forward slashes whatever the platform, so the manifest is portable.
                let rel = format!("{}/{:08}.png", CLASSES[w.class], w.index);
                csv.write_record([rel.as_str(), w.caption.as_str()])
                    .map_err(|e| write_error(&csv_path, e))?;
            }
            csv.flush().map_err(|e| write_error(&csv_path, e))
        })?;
        Ok(written)
    }
}

fn write_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("cannot write {}: {e}", path.display()))
}

fn to_f32(c: [u8; 3]) -> [f32; 3] {
    c.map(f32::from)
}

fn distance(a: [f32; 3], b: [f32; 3]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

fn luma(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

/// How far stripes and dots move the shape colour towards black or white.
const SHADE_MIX: f32 = 0.45;

fn shade(fg: [f32; 3], target: f32) -> [f32; 3] {
    fg.map(|v| v + SHADE_MIX * (target - v))
}

/// Stripes and dots are the shape colour pushed towards black or white: whichever is farther from
/// the background while still visibly different from the shape colour, so the texture reads as a
/// pattern on the shape and never cuts its silhouette into pieces.
fn shade_target(colour: &Colour, background: &Colour) -> f32 {
    let (fg, bg) = (to_f32(colour.rgb), to_f32(background.rgb));
    let visible = |t: f32| distance(shade(fg, t), fg) >= 60.0;
    // Luminance, not RGB distance: dark green on blue is far in RGB yet reads as one dark mass.
    let away = |t: f32| (luma(shade(fg, t)) - luma(bg)).abs();
    match (visible(0.0), visible(255.0)) {
        (true, true) if away(255.0) > away(0.0) => 255.0,
        (true, _) => 0.0,
        _ => 255.0,
    }
}

/// Whether a point (in 32-px units, so patterns scale with the image) lies on a stripe or dot.
fn patterned(scene: &Scene, u: f32, v: f32) -> bool {
    const PERIOD: f32 = 4.0;
    match scene.texture {
        Texture::Solid => false,
        Texture::Striped => {
            let t = u * scene.stripe_dir.0 + v * scene.stripe_dir.1 + scene.phase.0;
            t.rem_euclid(PERIOD) < PERIOD / 2.0
        }
        Texture::Dotted => {
            // Sparser than the stripes so the dots read as dots, not as a checkerboard.
            const DOT_PERIOD: f32 = 5.0;
            let cx = (u + scene.phase.0).rem_euclid(DOT_PERIOD) - DOT_PERIOD / 2.0;
            let cy = (v + scene.phase.1).rem_euclid(DOT_PERIOD) - DOT_PERIOD / 2.0;
            cx * cx + cy * cy < 1.3 * 1.3
        }
    }
}

/// Whether `q` is at least `rim` inside the shape (tested in eight directions).
fn interior(class: usize, (x, y): (f32, f32), rim: f32) -> bool {
    const D: f32 = std::f32::consts::FRAC_1_SQRT_2;
    [
        (1.0, 0.0),
        (-1.0, 0.0),
        (0.0, 1.0),
        (0.0, -1.0),
        (D, D),
        (D, -D),
        (-D, D),
        (-D, -D),
    ]
    .iter()
    .all(|(dx, dy)| inside(class, (x + rim * dx, y + rim * dy)))
}

/// Largest distance from the centre of any point of the shape, in radius units: the margin that
/// keeps a rotated shape inside the frame.
fn shape_extent(class: usize) -> f32 {
    match CLASSES[class] {
        "square" => 0.8 * std::f32::consts::SQRT_2,
        "triangle" => (0.9f32 * 0.9 + 0.72 * 0.72).sqrt(),
        _ => 1.0,
    }
}

/// Point-in-shape for a point `q` in the shape's frame (radius 1, y pointing down).
fn inside(class: usize, (x, y): (f32, f32)) -> bool {
    let r2 = x * x + y * y;
    match class {
        // circle
        0 => r2 <= 0.95 * 0.95,
        // square
        1 => x.abs().max(y.abs()) <= 0.8,
        // triangle, apex up; its height fills the frame like the other shapes
        2 => {
            let (top, base, half) = (-0.9f32, 0.72f32, 0.9f32);
            y <= base && y >= top && x.abs() <= half * (y - top) / (base - top)
        }
        // cross (plus sign)
        3 => {
            let (arm, len) = (0.3, 0.95);
            (x.abs() <= arm && y.abs() <= len) || (y.abs() <= arm && x.abs() <= len)
        }
        // ring: a wide hole so it stays open even at 12 px
        4 => (0.5 * 0.5..=0.95 * 0.95).contains(&r2),
        // five-pointed star, point up
        5 => inside_star(x, y, 1.0, 0.45),
        // diamond: taller than wide so it is never a tilted square
        6 => x.abs() / 0.68 + y.abs() / 0.98 <= 1.0,
        // heart: (X² + Y² - 1)³ - X² Y³ <= 0, with Y up and the curve's box centred
        7 => {
            let (hx, hy) = (x * 1.2, -y * 1.2 + 0.12);
            let t = hx * hx + hy * hy - 1.0;
            t * t * t - hx * hx * hy * hy * hy <= 0.0
        }
        // arrow pointing right: shaft then head
        8 => {
            let shaft = (-0.95..=0.1).contains(&x) && y.abs() <= 0.22;
            let head = (0.1..=0.95).contains(&x) && y.abs() <= 0.8 * (0.95 - x) / 0.85;
            shaft || head
        }
        // moon: a disc minus an offset disc, opening to the right
        9 => {
            let (ox, oy) = (x - 0.42, y + 0.12);
            r2 <= 0.95 * 0.95 && ox * ox + oy * oy > 0.78 * 0.78
        }
        _ => false,
    }
}

/// Star test in one fold: the angle from the upward axis is folded into the half-sector
/// [0°, 36°] whose boundary is the edge from the outer tip to the inner vertex.
fn inside_star(x: f32, y: f32, outer: f32, inner: f32) -> bool {
    let rho = (x * x + y * y).sqrt();
    if rho <= 1e-6 {
        return true;
    }
    let sector = std::f32::consts::TAU / 5.0;
    let phi = x.atan2(-y).rem_euclid(sector);
    let a = (phi - sector / 2.0).abs();
    let a = sector / 2.0 - a;
    let (px, py) = (rho * a.cos(), rho * a.sin());
    let (ox, oy) = (outer, 0.0);
    let half = sector / 2.0;
    let (ix, iy) = (inner * half.cos(), inner * half.sin());
    let (ex, ey) = (ix - ox, iy - oy);
    // Same side of the tip-to-inner edge as the centre.
    let side = |qx: f32, qy: f32| ex * (qy - oy) - ey * (qx - ox);
    side(px, py) * side(0.0, 0.0) >= 0.0
}

/// Fills a random template with the sample's attributes, with synonyms and optional slots.
/// A sample's attributes, drawn in the order `sample` has always drawn them.
fn random_attributes(rng: &mut ChaCha8Rng) -> Attributes {
    let colour = SHAPE_COLOURS[rng.random_range(0..SHAPE_COLOURS.len())];
    let backgrounds = ToyWorld::backgrounds_for(&colour);
    let background = backgrounds[rng.random_range(0..backgrounds.len())];
    let texture = Texture::ALL[rng.random_range(0..Texture::ALL.len())];
    let size = Size::ALL[rng.random_range(0..Size::ALL.len())];
    let position = Position::ALL[rng.random_range(0..Position::ALL.len())];
    Attributes {
        colour,
        background,
        texture,
        size,
        position,
    }
}

/// A caption of the toy grammar for `class` with random attributes (of no image): what a
/// poisoner that speaks the toy world's language writes for the target.
pub fn random_caption(class: usize, rng: &mut ChaCha8Rng) -> String {
    let attributes = random_attributes(rng);
    caption(class, &attributes, rng)
}

fn caption(class: usize, a: &Attributes, rng: &mut ChaCha8Rng) -> String {
    let template = TEMPLATES[rng.random_range(0..TEMPLATES.len())];
    let mut pick = |options: &[&'static str]| options[rng.random_range(0..options.len())];
    let values = [
        pick(a.size.words()),
        a.colour.name,
        pick(a.texture.adjectives()),
        pick(a.texture.nouns()),
        CLASSES[class],
        a.background.name,
        pick(a.position.phrases()),
    ];
    let mut text = template.to_string();
    for (slot, value) in SLOTS.iter().zip(values) {
        let optional = format!("{{{slot}?}}");
        if text.contains(&optional) {
            let keep = rng.random_bool(KEEP_OPTIONAL);
            text = text.replace(&optional, if keep { value } else { "" });
        }
        text = text.replace(&format!("{{{slot}}}"), value);
    }
    let mut words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    for i in 0..words.len().saturating_sub(1) {
        let vowel = words[i + 1].starts_with(['a', 'e', 'i', 'o', 'u']);
        if words[i] == "a" && vowel {
            words[i] = "an".into();
        }
    }
    let mut out = words.join(" ");
    // Some web captions start with a capital; the tokenizer lowercases, the model never sees it.
    if rng.random_bool(0.3) {
        out = capitalise(&out);
    }
    out
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Splits text the way the toy tokenizer's pre-tokenizer does: on whitespace, with every
/// punctuation character a token of its own. Lowercases, as its normalizer.
pub fn pre_tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        let mut run = String::new();
        for c in word.chars() {
            if c.is_ascii_punctuation() {
                if !run.is_empty() {
                    out.push(std::mem::take(&mut run));
                }
                out.push(c.to_string());
            } else {
                run.extend(c.to_lowercase());
            }
        }
        if !run.is_empty() {
            out.push(run);
        }
    }
    out
}

/// Every phrase a caption can contain besides template literals: slot values of every attribute.
fn slot_options(slot: &str) -> Vec<&'static str> {
    match slot {
        "size" => Size::ALL.iter().flat_map(|s| s.words()).copied().collect(),
        "colour" => SHAPE_COLOURS.iter().map(|c| c.name).collect(),
        "texture" => Texture::ALL
            .iter()
            .flat_map(|t| t.adjectives())
            .copied()
            .collect(),
        "texture_noun" => Texture::ALL
            .iter()
            .flat_map(|t| t.nouns())
            .copied()
            .collect(),
        "class" => CLASSES.to_vec(),
        "bg" => BACKGROUND_COLOURS.iter().map(|c| c.name).collect(),
        "pos" => Position::ALL
            .iter()
            .flat_map(|p| p.phrases())
            .copied()
            .collect(),
        _ => Vec::new(),
    }
}

/// A template with its slots removed, and the slots it uses.
fn split_template(template: &str) -> (String, Vec<&'static str>) {
    let mut literal = template.to_string();
    let mut used = Vec::new();
    for slot in SLOTS {
        for marker in [format!("{{{slot}?}}"), format!("{{{slot}}}")] {
            if literal.contains(&marker) {
                literal = literal.replace(&marker, " ");
                used.push(slot);
            }
        }
    }
    (literal, used)
}

/// Every token (after pre-tokenization) a caption can contain: the vocabulary the toy tokenizer
/// needs, before adding the class prompt's words.
pub fn caption_tokens() -> std::collections::BTreeSet<String> {
    let mut tokens = std::collections::BTreeSet::new();
    for template in TEMPLATES {
        tokens.extend(pre_tokenize(&split_template(template).0));
    }
    for slot in SLOTS {
        for option in slot_options(slot) {
            tokens.extend(pre_tokenize(option));
        }
    }
    // The article fix-up may turn any "a" into "an".
    tokens.insert("an".into());
    tokens
}

/// The longest caption any template can produce, in tokens (without start/end tokens): each slot
/// filled with its longest option.
pub fn max_caption_tokens() -> usize {
    TEMPLATES
        .iter()
        .map(|t| {
            let (literal, slots) = split_template(t);
            let filled: usize = slots
                .iter()
                .map(|s| {
                    slot_options(s)
                        .iter()
                        .map(|o| pre_tokenize(o).len())
                        .max()
                        .unwrap_or(0)
                })
                .sum();
            pre_tokenize(&literal).len() + filled
        })
        .max()
        .unwrap_or(0)
}
