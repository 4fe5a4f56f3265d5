//! PNG line charts for run directories and sweep reports.
//!
//! Pure Rust and self-contained: pixels go into an RGB buffer, text is set in
//! embedded-graphics' built-in bitmap fonts (no system fonts), and `png`
//! encodes the result. Bad input (NaN, empty series, non-positive values on a
//! log axis, odd sizes) is skipped or padded, never a panic.
//!
//! ```no_run
//! use plot::{Chart, Series};
//! let mut chart = Chart::new("reward", "step", "mean reward");
//! chart.series.push(Series::new("run a", vec![(0.0, 0.1), (10.0, 0.4)]));
//! chart.write_png(std::path::Path::new("reward.png")).unwrap();
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod canvas;
mod render;
#[cfg(test)]
mod tests;
mod ticks;

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use canvas::Canvas;

/// One line on a chart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Name shown in the legend (shown only when a chart has several series).
    pub label: String,
    /// (x, y) points, joined in the given order; points with NaN/inf (or
    /// non-positive values on a log axis) are skipped.
    pub points: Vec<(f64, f64)>,
    /// Optional shaded spread as (x, low, high), e.g. min/max over seeds,
    /// drawn under the line in a light tint of its color.
    pub band: Option<Vec<(f64, f64, f64)>>,
}

impl Series {
    /// A series without a band.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            label: label.into(),
            points,
            band: None,
        }
    }
}

/// How an axis maps values to positions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scale {
    /// Evenly spaced values, ticks at 1-2-5 steps.
    #[default]
    Linear,
    /// Base-10 logarithmic, ticks at decades (or 1-2-5 values on short
    /// ranges); values <= 0 are skipped.
    Log10,
}

/// A line chart: axes, title, legend and any number of series.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// Shown centred above the plot.
    pub title: String,
    /// Shown under the x axis.
    pub x_label: String,
    /// Shown beside the y axis, reading upwards.
    pub y_label: String,
    /// Scale of the x axis.
    pub x_scale: Scale,
    /// Scale of the y axis.
    pub y_scale: Scale,
    /// The lines, colored in order from a fixed colorblind-friendly palette.
    pub series: Vec<Series>,
    /// Fixed y range (low, high); None fits the data. Ignored when not a
    /// valid range for the scale; data outside it is clipped.
    pub y_range: Option<(f64, f64)>,
    /// Image width in pixels (clamped to 48..=8192).
    pub width: u32,
    /// Image height in pixels (clamped to 48..=8192).
    pub height: u32,
}

impl Chart {
    /// An empty 800x500 chart with linear axes.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Chart {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            series: Vec::new(),
            y_range: None,
            width: 800,
            height: 500,
        }
    }

    /// Draws the chart: (width, height, row-major RGB bytes, 3 per pixel).
    pub fn render_rgb(&self) -> (u32, u32, Vec<u8>) {
        let c = render::render(self);
        (c.w, c.h, c.px)
    }

    /// Writes the chart as a PNG, atomically (see [`write_grid`]).
    pub fn write_png(&self, path: &Path) -> io::Result<()> {
        write_canvas(path, &render::render(self))
    }
}

/// Several charts side by side in one PNG (e.g. reward and held-out accuracy
/// of one run), `columns` per row, each in a cell as large as the largest.
///
/// Like [`Chart::write_png`], it writes a temporary file in the same folder
/// and renames it into place, so a reader never sees a half-written image.
/// No charts gives an InvalidInput error.
pub fn write_grid(path: &Path, charts: &[Chart], columns: usize) -> io::Result<()> {
    if charts.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "write_grid: no charts",
        ));
    }
    let cols = columns.clamp(1, charts.len());
    let rows = charts.len().div_ceil(cols);
    let cells: Vec<Canvas> = charts.iter().map(render::render).collect();
    let cw = cells.iter().map(|c| c.w).max().unwrap_or(1);
    let ch = cells.iter().map(|c| c.h).max().unwrap_or(1);
    let (w, h) = (cw as u64 * cols as u64, ch as u64 * rows as u64);
    // PNG sides are u32; keep the buffer to a sane size too (~1.5 GB).
    if w > u32::MAX as u64 || h > u32::MAX as u64 || w * h > 1 << 29 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "write_grid: image too large",
        ));
    }
    let mut out = Canvas::new(w as u32, h as u32, render::WHITE);
    for (i, cell) in cells.iter().enumerate() {
        out.blit(
            cell,
            (i % cols) as i64 * cw as i64,
            (i / cols) as i64 * ch as i64,
        );
    }
    write_canvas(path, &out)
}

/// Encodes to PNG in memory, then writes it atomically.
fn write_canvas(path: &Path, c: &Canvas) -> io::Result<()> {
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, c.w, c.h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(&c.px)?;
    writer.finish()?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to a unique temporary file beside `path`, then renames it
/// over `path`; rename within one folder is atomic, so readers see the old
/// file or the new one, never a part.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        n
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        // On disk before the rename, so a crash can't leave an empty file under the real name.
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
