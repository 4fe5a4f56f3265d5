//! Lays a chart out (margins, axes, legend) and draws it onto a canvas.

use embedded_graphics::mono_font::iso_8859_1::{FONT_6X10, FONT_6X13, FONT_7X13, FONT_9X15_BOLD};
use embedded_graphics::mono_font::MonoFont;

use crate::canvas::{fit, text_width, Canvas, Mask, Rect, Rgb};
use crate::ticks::{axis, transform, Axis};
use crate::{Chart, Scale};

/// Okabe-Ito colors, which stay distinct under the common color-vision
/// deficiencies; ordered for contrast on white, the faint yellow last.
pub(crate) const PALETTE: [Rgb; 8] = [
    [0x00, 0x72, 0xB2], // blue
    [0xD5, 0x5E, 0x00], // vermillion
    [0x00, 0x9E, 0x73], // bluish green
    [0xCC, 0x79, 0xA7], // reddish purple
    [0xE6, 0x9F, 0x00], // orange
    [0x56, 0xB4, 0xE9], // sky blue
    [0x00, 0x00, 0x00], // black
    [0xF0, 0xE4, 0x42], // yellow
];

/// Background.
pub(crate) const WHITE: Rgb = [0xFF; 3];
const INK: Rgb = [0x22; 3];
const FRAME: Rgb = [0x55; 3];
const GRID: Rgb = [0xE6; 3];
const MUTED: Rgb = [0x88; 3];

const TITLE_FONT: &MonoFont = &FONT_9X15_BOLD;
const LABEL_FONT: &MonoFont = &FONT_7X13;
const TICK_FONT: &MonoFont = &FONT_6X10;
const LEGEND_FONT: &MonoFont = &FONT_6X13;

/// Outer margin, pixels.
const PAD: i64 = 8;
const TICK_LEN: i64 = 4;
/// Data is kept this far inside the frame so end markers and lines show whole.
const INSET: f64 = 6.0;
/// Series with at most this many points get a marker at each point.
const MARKER_MAX_POINTS: usize = 30;
const MARKER_RADIUS: f64 = 3.0;
/// Half the line width: lines are 2 px wide.
const LINE_HALF: f64 = 1.0;
/// Opacity of a band's tint over the background.
const BAND_OPACITY: f32 = 0.22;
const SWATCH: i64 = 22;
const LEGEND_ROW_H: i64 = 16;
/// Legend rows at most; further series are summed up as "+N more".
const LEGEND_ROWS: i64 = 3;
const LEGEND_MAX_CHARS: i64 = 40;
const Y_TICK_MAX_CHARS: i64 = 12;

/// Chart sides are clamped to this range so tiny or absurd sizes still render.
pub(crate) const MIN_SIDE: u32 = 48;
/// See [`MIN_SIDE`].
pub(crate) const MAX_SIDE: u32 = 8192;

fn color(i: usize) -> Rgb {
    PALETTE[i % PALETTE.len()]
}

fn font_h(f: &MonoFont) -> i64 {
    f.character_size.height as i64
}

fn chars_fitting(px: i64, f: &MonoFont) -> i64 {
    px / (f.character_size.width as i64 + f.character_spacing as i64).max(1)
}

/// One axis: its range and ticks, and the pixels its range maps onto.
pub(crate) struct AxisMap {
    axis: Axis,
    scale: Scale,
    p0: f64,
    p1: f64,
}

impl AxisMap {
    /// Pixel position of a data value, or None if the axis can't show it.
    pub fn pos(&self, v: f64) -> Option<f64> {
        self.at(transform(self.scale, v)?)
    }

    /// Pixel position of a transformed value.
    fn at(&self, t: f64) -> Option<f64> {
        let p = self.p0 + (t - self.axis.lo) / (self.axis.hi - self.axis.lo) * (self.p1 - self.p0);
        p.is_finite().then_some(p)
    }
}

/// A legend entry at (x, y); `series` is None for the "+N more" note.
struct LegendItem {
    x: i64,
    y: i64,
    series: Option<usize>,
    label: String,
}

/// Where each part of a chart goes.
pub(crate) struct Layout {
    pub w: u32,
    pub h: u32,
    /// The plot area inside the frame; series are drawn only here.
    pub plot: Rect,
    pub x: AxisMap,
    pub y: AxisMap,
    title: String,
    legend: Vec<LegendItem>,
    x_label: String,
    y_label: String,
    /// Label every n-th x tick, so wide labels don't collide.
    x_label_every: usize,
    has_data: bool,
}

/// A (min, max) range, or None before any value.
type Extent = Option<(f64, f64)>;

/// The (x, y) extents of everything drawable, in transformed space.
fn extents(chart: &Chart) -> (Extent, Extent) {
    fn grow(r: &mut Extent, v: f64) {
        *r = Some(match *r {
            Some((lo, hi)) => (lo.min(v), hi.max(v)),
            None => (v, v),
        });
    }
    let (xs, ys) = (chart.x_scale, chart.y_scale);
    let (mut x, mut y) = (None, None);
    for s in &chart.series {
        for &(px, py) in &s.points {
            if let (Some(tx), Some(ty)) = (transform(xs, px), transform(ys, py)) {
                grow(&mut x, tx);
                grow(&mut y, ty);
            }
        }
        for &(bx, lo, hi) in s.band.iter().flatten() {
            if let (Some(tx), Some(a), Some(b)) =
                (transform(xs, bx), transform(ys, lo), transform(ys, hi))
            {
                grow(&mut x, tx);
                grow(&mut y, a);
                grow(&mut y, b);
            }
        }
    }
    (x, y)
}

/// Places the legend's entries in rows from `top`; returns them and the rows used.
fn legend(chart: &Chart, w: i64, top: i64) -> (Vec<LegendItem>, i64) {
    let right = w - PAD;
    let max_chars = chars_fitting(w - 2 * PAD - SWATCH - 4, LEGEND_FONT).min(LEGEND_MAX_CHARS);
    let width = |label: &str| SWATCH + 4 + text_width(label, LEGEND_FONT);
    let mut items: Vec<LegendItem> = Vec::new();
    let (mut x, mut row) = (PAD, 0);
    for (i, s) in chart.series.iter().enumerate() {
        let name = if s.label.trim().is_empty() {
            format!("series {}", i + 1)
        } else {
            s.label.clone()
        };
        let label = fit(&name, max_chars);
        if x > PAD && x + width(&label) > right {
            row += 1;
            x = PAD;
        }
        if row >= LEGEND_ROWS {
            break;
        }
        items.push(LegendItem {
            x,
            y: top + row * LEGEND_ROW_H,
            series: Some(i),
            label: label.clone(),
        });
        x += width(&label) + 14;
    }
    // Series that didn't fit are counted after the last entry, making room if needed.
    let mut more = chart.series.len() - items.len();
    while more > 0 {
        let note = format!("+{more} more");
        let (nx, ny) = match items.last() {
            Some(it) => (it.x + width(&it.label) + 14, it.y),
            None => (PAD, top),
        };
        if items.is_empty() || nx + text_width(&note, LEGEND_FONT) <= right {
            items.push(LegendItem {
                x: nx,
                y: ny,
                series: None,
                label: note,
            });
            break;
        }
        items.pop();
        more += 1;
    }
    let rows = items.last().map_or(0, |it| (it.y - top) / LEGEND_ROW_H + 1);
    (items, rows)
}

/// Works out margins, axes and legend for a chart.
pub(crate) fn layout(chart: &Chart) -> Layout {
    let (w, h) = (
        chart.width.clamp(MIN_SIDE, MAX_SIDE),
        chart.height.clamp(MIN_SIDE, MAX_SIDE),
    );
    let (wi, hi) = (w as i64, h as i64);

    let title = fit(&chart.title, chars_fitting(wi - 2 * PAD, TITLE_FONT));
    let mut top = PAD
        + if title.trim().is_empty() {
            0
        } else {
            font_h(TITLE_FONT) + 6
        };
    let mut legend_items = Vec::new();
    if chart.series.len() > 1 {
        let (items, rows) = legend(chart, wi, top);
        legend_items = items;
        top += rows * LEGEND_ROW_H + 2;
    }
    // Room above the plot for half of the top y tick label.
    top += font_h(TICK_FONT) / 2;

    let x_label_raw = chart.x_label.trim();
    let mut bottom = hi - PAD - TICK_LEN - 3 - font_h(TICK_FONT);
    if !x_label_raw.is_empty() {
        bottom -= font_h(LABEL_FONT) + 4;
    }

    let (x_ext, y_ext) = extents(chart);
    let y_axis = axis(
        chart.y_scale,
        y_ext,
        chart.y_range,
        ((bottom - top) / 45).max(0) as usize,
    );
    // y tick labels decide the left margin, so they are fixed first.
    let y_axis = Axis {
        ticks: y_axis
            .ticks
            .into_iter()
            .map(|mut t| {
                t.label = fit(&t.label, Y_TICK_MAX_CHARS);
                t
            })
            .collect(),
        ..y_axis
    };
    let y_tick_w = y_axis
        .ticks
        .iter()
        .map(|t| text_width(&t.label, TICK_FONT))
        .max()
        .unwrap_or(0);
    let y_label_raw = chart.y_label.trim();
    let mut left = PAD + y_tick_w + 3 + TICK_LEN;
    if !y_label_raw.is_empty() {
        left += font_h(LABEL_FONT) + 6;
    }
    // The last x label is centred on the right end; this leaves it some room.
    let right = wi - PAD - 12;
    let plot = Rect {
        x0: left,
        y0: top,
        x1: right,
        y1: bottom,
    };

    let x_axis = axis(
        chart.x_scale,
        x_ext,
        None,
        ((right - left) / 90).max(0) as usize,
    );
    let x_axis = Axis {
        ticks: x_axis
            .ticks
            .into_iter()
            .map(|mut t| {
                t.label = fit(&t.label, Y_TICK_MAX_CHARS);
                t
            })
            .collect(),
        ..x_axis
    };
    let x_label_every = {
        let widest = x_axis
            .ticks
            .iter()
            .map(|t| text_width(&t.label, TICK_FONT))
            .max()
            .unwrap_or(0);
        let gaps = x_axis.ticks.len().saturating_sub(1).max(1) as f64;
        let spacing = ((right - left) as f64 - 2.0 * INSET) / gaps;
        let every = ((widest + 10) as f64 / spacing.max(1.0)).ceil();
        if every.is_finite() {
            (every as usize).max(1)
        } else {
            1
        }
    };

    let x = AxisMap {
        axis: x_axis,
        scale: chart.x_scale,
        p0: left as f64 + INSET,
        p1: right as f64 - INSET,
    };
    let y = AxisMap {
        axis: y_axis,
        scale: chart.y_scale,
        p0: bottom as f64 - INSET,
        p1: top as f64 + INSET,
    };
    Layout {
        w,
        h,
        plot,
        x,
        y,
        title,
        legend: legend_items,
        x_label: fit(x_label_raw, chars_fitting(right - left, LABEL_FONT)),
        y_label: fit(y_label_raw, chars_fitting(bottom - top, LABEL_FONT)),
        x_label_every,
        has_data: x_ext.is_some(),
    }
}

/// Draws a whole chart.
pub(crate) fn render(chart: &Chart) -> Canvas {
    let l = layout(chart);
    let mut c = Canvas::new(l.w, l.h, WHITE);
    let (wi, hi) = (l.w as i64, l.h as i64);
    let p = l.plot;

    // Grid first, so bands and lines cover it.
    for t in &l.x.axis.ticks {
        if let Some(x) = l.x.at(t.pos) {
            c.fill(
                Rect {
                    x0: x as i64,
                    y0: p.y0,
                    x1: x as i64 + 1,
                    y1: p.y1,
                },
                GRID,
            );
        }
    }
    for t in &l.y.axis.ticks {
        if let Some(y) = l.y.at(t.pos) {
            c.fill(
                Rect {
                    x0: p.x0,
                    y0: y as i64,
                    x1: p.x1,
                    y1: y as i64 + 1,
                },
                GRID,
            );
        }
    }

    // All bands before any line, so no band hides another series' line.
    let mut mask = Mask::new(p);
    for (i, s) in chart.series.iter().enumerate() {
        let Some(band) = &s.band else { continue };
        let mut pts: Vec<(f64, f64, f64)> = band
            .iter()
            .filter_map(|&(x, a, b)| Some((l.x.pos(x)?, l.y.pos(a)?, l.y.pos(b)?)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        mask.clear();
        mask.fill_between(&pts);
        c.paint(&mask, color(i), BAND_OPACITY);
    }
    for (i, s) in chart.series.iter().enumerate() {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter_map(|&(x, y)| Some((l.x.pos(x)?, l.y.pos(y)?)))
            .collect();
        mask.clear();
        for seg in pts.windows(2) {
            mask.segment(seg[0], seg[1], LINE_HALF);
        }
        if pts.len() <= MARKER_MAX_POINTS {
            for &pt in &pts {
                mask.disc(pt, MARKER_RADIUS);
            }
        }
        c.paint(&mask, color(i), 1.0);
    }

    // Frame just outside the plot area.
    c.fill(
        Rect {
            x0: p.x0 - 1,
            y0: p.y0 - 1,
            x1: p.x1 + 1,
            y1: p.y0,
        },
        FRAME,
    );
    c.fill(
        Rect {
            x0: p.x0 - 1,
            y0: p.y1,
            x1: p.x1 + 1,
            y1: p.y1 + 1,
        },
        FRAME,
    );
    c.fill(
        Rect {
            x0: p.x0 - 1,
            y0: p.y0,
            x1: p.x0,
            y1: p.y1,
        },
        FRAME,
    );
    c.fill(
        Rect {
            x0: p.x1,
            y0: p.y0,
            x1: p.x1 + 1,
            y1: p.y1,
        },
        FRAME,
    );

    let tick_h = font_h(TICK_FONT);
    for (k, t) in l.x.axis.ticks.iter().enumerate() {
        let Some(x) = l.x.at(t.pos) else { continue };
        let x = x as i64;
        c.fill(
            Rect {
                x0: x,
                y0: p.y1 + 1,
                x1: x + 1,
                y1: p.y1 + 1 + TICK_LEN,
            },
            FRAME,
        );
        if k % l.x_label_every == 0 {
            let tw = text_width(&t.label, TICK_FONT);
            let tx = (x - tw / 2).min(wi - tw).max(0);
            c.text(&t.label, tx, p.y1 + 1 + TICK_LEN + 3, TICK_FONT, INK);
        }
    }
    for t in &l.y.axis.ticks {
        let Some(y) = l.y.at(t.pos) else { continue };
        let y = y as i64;
        c.fill(
            Rect {
                x0: p.x0 - 1 - TICK_LEN,
                y0: y,
                x1: p.x0 - 1,
                y1: y + 1,
            },
            FRAME,
        );
        let tw = text_width(&t.label, TICK_FONT);
        let ty = (y - tick_h / 2).min(hi - tick_h).max(0);
        c.text(&t.label, p.x0 - 1 - TICK_LEN - 3 - tw, ty, TICK_FONT, INK);
    }

    let mid_x = (p.x0 + p.x1) / 2;
    let mid_y = (p.y0 + p.y1) / 2;
    if !l.x_label.is_empty() {
        let tw = text_width(&l.x_label, LABEL_FONT);
        c.text(
            &l.x_label,
            mid_x - tw / 2,
            hi - PAD - font_h(LABEL_FONT),
            LABEL_FONT,
            INK,
        );
    }
    if !l.y_label.is_empty() {
        let tw = text_width(&l.y_label, LABEL_FONT);
        c.text_up(&l.y_label, PAD, mid_y + tw / 2, LABEL_FONT, INK);
    }
    if !l.title.is_empty() {
        let tw = text_width(&l.title, TITLE_FONT);
        c.text(&l.title, ((wi - tw) / 2).max(0), PAD, TITLE_FONT, INK);
    }

    for it in &l.legend {
        match it.series {
            Some(i) => {
                // A short line with a marker, like the series itself.
                let mut sw = Mask::new(Rect {
                    x0: it.x,
                    y0: it.y,
                    x1: it.x + SWATCH,
                    y1: it.y + LEGEND_ROW_H,
                });
                let cy = it.y as f64 + 7.0;
                sw.segment(
                    (it.x as f64 + 2.0, cy),
                    ((it.x + SWATCH) as f64 - 2.0, cy),
                    LINE_HALF,
                );
                sw.disc(((it.x + SWATCH / 2) as f64, cy), MARKER_RADIUS);
                c.paint(&sw, color(i), 1.0);
                c.text(&it.label, it.x + SWATCH + 4, it.y, LEGEND_FONT, INK);
            }
            None => c.text(&it.label, it.x, it.y, LEGEND_FONT, MUTED),
        }
    }

    if !l.has_data {
        let msg = "no data";
        let tw = text_width(msg, LABEL_FONT);
        c.text(
            msg,
            mid_x - tw / 2,
            mid_y - font_h(LABEL_FONT) / 2,
            LABEL_FONT,
            MUTED,
        );
    }
    c
}
