//! An RGB pixel buffer with the few primitives a chart needs: rectangles,
//! anti-aliased strokes through a coverage mask, and bitmap-font text.

use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::text::{Baseline, Text};

/// An 8-bit RGB color.
pub(crate) type Rgb = [u8; 3];

/// A pixel rectangle, `x0..x1` by `y0..y1` (ends excluded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rect {
    pub x0: i64,
    pub y0: i64,
    pub x1: i64,
    pub y1: i64,
}

impl Rect {
    /// Whether pixel (x, y) lies inside.
    pub fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }
    fn width(&self) -> i64 {
        (self.x1 - self.x0).max(0)
    }
    fn height(&self) -> i64 {
        (self.y1 - self.y0).max(0)
    }
}

/// Row-major RGB pixels, 3 bytes each.
pub(crate) struct Canvas {
    pub w: u32,
    pub h: u32,
    pub px: Vec<u8>,
}

impl Canvas {
    /// A canvas filled with `bg`.
    pub fn new(w: u32, h: u32, bg: Rgb) -> Canvas {
        let px = bg
            .iter()
            .copied()
            .cycle()
            .take(w as usize * h as usize * 3)
            .collect();
        Canvas { w, h, px }
    }

    fn index(&self, x: i64, y: i64) -> Option<usize> {
        let inside = x >= 0 && y >= 0 && x < self.w as i64 && y < self.h as i64;
        inside.then(|| (y as usize * self.w as usize + x as usize) * 3)
    }

    /// The color at (x, y), if inside.
    pub fn get(&self, x: i64, y: i64) -> Option<Rgb> {
        self.index(x, y)
            .map(|i| [self.px[i], self.px[i + 1], self.px[i + 2]])
    }

    /// Sets one pixel; outside the canvas it does nothing.
    pub fn put(&mut self, x: i64, y: i64, c: Rgb) {
        if let Some(i) = self.index(x, y) {
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Mixes `c` over the pixel with opacity `a` (0..=1); full opacity sets it exactly.
    pub fn blend(&mut self, x: i64, y: i64, c: Rgb, a: f32) {
        let Some(i) = self.index(x, y) else { return };
        if a >= 1.0 {
            self.px[i..i + 3].copy_from_slice(&c);
        } else if a > 0.0 {
            for (old, new) in self.px[i..i + 3].iter_mut().zip(c) {
                *old = (*old as f32 + (new as f32 - *old as f32) * a).round() as u8;
            }
        }
    }

    /// Fills a rectangle.
    pub fn fill(&mut self, r: Rect, c: Rgb) {
        for y in r.y0.max(0)..r.y1.min(self.h as i64) {
            for x in r.x0.max(0)..r.x1.min(self.w as i64) {
                self.put(x, y, c);
            }
        }
    }

    /// Copies another canvas in with its top-left corner at (x, y).
    pub fn blit(&mut self, src: &Canvas, x: i64, y: i64) {
        for sy in 0..src.h as i64 {
            for sx in 0..src.w as i64 {
                if let Some(c) = src.get(sx, sy) {
                    self.put(x + sx, y + sy, c);
                }
            }
        }
    }

    /// Paints a coverage mask in color `c`, each pixel at `opacity` times its coverage.
    pub fn paint(&mut self, m: &Mask, c: Rgb, opacity: f32) {
        for (k, cov) in m.cov.iter().enumerate() {
            if *cov > 0.0 {
                let (x, y) = (m.rect.x0 + k as i64 % m.w, m.rect.y0 + k as i64 / m.w);
                self.blend(x, y, c, cov * opacity);
            }
        }
    }

    /// Draws text with its top-left corner at (x, y).
    pub fn text(&mut self, s: &str, x: i64, y: i64, font: &MonoFont, c: Rgb) {
        let mut view = Shifted {
            canvas: self,
            x,
            y,
            up: false,
        };
        let _ =
            Text::with_baseline(s, Point::zero(), style(font, c), Baseline::Top).draw(&mut view);
    }

    /// Draws text turned a quarter left (reading upwards), its baseline-start
    /// corner at (x, y): it spans x..x+font height and y-width..y.
    pub fn text_up(&mut self, s: &str, x: i64, y: i64, font: &MonoFont, c: Rgb) {
        let mut view = Shifted {
            canvas: self,
            x,
            y,
            up: true,
        };
        let _ =
            Text::with_baseline(s, Point::zero(), style(font, c), Baseline::Top).draw(&mut view);
    }
}

fn style<'a>(font: &'a MonoFont<'a>, c: Rgb) -> MonoTextStyle<'a, Rgb888> {
    MonoTextStyle::new(font, Rgb888::new(c[0], c[1], c[2]))
}

/// Width in pixels of `s` set in `font`.
pub(crate) fn text_width(s: &str, font: &MonoFont) -> i64 {
    let n = s.chars().count() as i64;
    let (w, gap) = (
        font.character_size.width as i64,
        font.character_spacing as i64,
    );
    (n * (w + gap) - gap).max(0)
}

/// Shortens `s` to at most `max` characters, marking the cut with "..", and
/// turns control characters (newlines, tabs) into spaces.
pub(crate) fn fit(s: &str, max: i64) -> String {
    let clean = s.chars().map(|c| if c.is_control() { ' ' } else { c });
    let n = s.chars().count() as i64;
    if n <= max {
        return clean.collect();
    }
    let keep = if max >= 4 { max - 2 } else { max.max(0) };
    let mut out: String = clean.take(keep as usize).collect();
    if max >= 4 {
        out.push_str("..");
    }
    out
}

/// A view of the canvas that moves the text origin to (x, y), and for
/// vertical text turns it: text pixel (tx, ty) lands at (x + ty, y - tx).
struct Shifted<'a> {
    canvas: &'a mut Canvas,
    x: i64,
    y: i64,
    up: bool,
}

impl OriginDimensions for Shifted<'_> {
    fn size(&self) -> Size {
        Size::new(self.canvas.w, self.canvas.h)
    }
}

impl DrawTarget for Shifted<'_> {
    type Color = Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Self::Error> {
        for Pixel(p, c) in pixels {
            let (tx, ty) = (p.x as i64, p.y as i64);
            let (x, y) = if self.up {
                (self.x + ty, self.y - tx)
            } else {
                (self.x + tx, self.y + ty)
            };
            self.canvas.put(x, y, [c.r(), c.g(), c.b()]);
        }
        Ok(())
    }
}

/// Per-pixel coverage (0..=1) over a rectangle. Shapes of one series are
/// merged here by taking the maximum, so joints and overlaps are painted once
/// instead of darkening where strokes meet.
pub(crate) struct Mask {
    rect: Rect,
    w: i64,
    cov: Vec<f32>,
}

impl Mask {
    /// An empty mask over `rect`.
    pub fn new(rect: Rect) -> Mask {
        let (w, h) = (rect.width(), rect.height());
        Mask {
            rect,
            w,
            cov: vec![0.0; (w * h) as usize],
        }
    }

    /// Forgets everything drawn.
    pub fn clear(&mut self) {
        self.cov.iter_mut().for_each(|c| *c = 0.0);
    }

    fn add(&mut self, x: i64, y: i64, cov: f32) {
        // NaN coverage (from absurd coordinates) fails this test and is dropped.
        if cov > 0.0 && self.rect.contains(x, y) {
            let k = ((y - self.rect.y0) * self.w + (x - self.rect.x0)) as usize;
            self.cov[k] = self.cov[k].max(cov.min(1.0));
        }
    }

    /// Pixel range [lo, hi] clamped to [min, max) — empty when it misses.
    fn span(lo: f64, hi: f64, min: i64, max: i64) -> std::ops::Range<i64> {
        // `as` saturates for huge values and maps NaN to 0, so this cannot overflow.
        (lo.floor() as i64).max(min)..(hi.ceil() as i64 + 1).min(max)
    }

    /// A stroke of width `2 * half` from `a` to `b`, anti-aliased at its edges.
    pub fn segment(&mut self, a: (f64, f64), b: (f64, f64), half: f64) {
        let r = self.rect;
        let m = half + 2.0;
        let outer = (
            r.x0 as f64 - m,
            r.y0 as f64 - m,
            r.x1 as f64 + m,
            r.y1 as f64 + m,
        );
        let Some((a, b)) = clip(a, b, outer) else {
            return;
        };
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = dx * dx + dy * dy;
        for y in Self::span(a.1.min(b.1) - m, a.1.max(b.1) + m, r.y0, r.y1) {
            for x in Self::span(a.0.min(b.0) - m, a.0.max(b.0) + m, r.x0, r.x1) {
                let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
                let t = if len2 > 0.0 {
                    (((px - a.0) * dx + (py - a.1) * dy) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let d = (px - a.0 - t * dx).hypot(py - a.1 - t * dy);
                self.add(x, y, (half + 0.5 - d) as f32);
            }
        }
    }

    /// A filled disc of radius `r` around `c`.
    pub fn disc(&mut self, c: (f64, f64), r: f64) {
        let rect = self.rect;
        for y in Self::span(c.1 - r - 1.0, c.1 + r + 1.0, rect.y0, rect.y1) {
            for x in Self::span(c.0 - r - 1.0, c.0 + r + 1.0, rect.x0, rect.x1) {
                let d = (x as f64 + 0.5 - c.0).hypot(y as f64 + 0.5 - c.1);
                self.add(x, y, (r + 0.5 - d) as f32);
            }
        }
    }

    /// Fills between two polylines that share x: each (x, y_a, y_b) in pixels,
    /// sorted by x. Pixel columns between neighbours get the interpolated span.
    pub fn fill_between(&mut self, pts: &[(f64, f64, f64)]) {
        let r = self.rect;
        let pairs = pts.windows(2).map(|w| (w[0], w[1]));
        // A lone point still shows as one column.
        let lone = (pts.len() == 1).then(|| (pts[0], pts[0]));
        for ((x0, a0, b0), (x1, a1, b1)) in pairs.chain(lone) {
            for x in Self::span(x0 - 0.5, x1 - 0.5, r.x0, r.x1) {
                let cx = x as f64 + 0.5;
                if cx < x0 - 0.5 || cx > x1 + 0.5 {
                    continue;
                }
                let t = if x1 > x0 {
                    ((cx - x0) / (x1 - x0)).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (ya, yb) = (a0 + t * (a1 - a0), b0 + t * (b1 - b0));
                for y in Self::span(ya.min(yb) - 0.5, ya.max(yb) - 0.5, r.y0, r.y1) {
                    self.add(x, y, 1.0);
                }
            }
        }
    }
}

/// Cuts segment a-b to the box (x0, y0, x1, y1) (Liang-Barsky); None when it misses.
fn clip(
    a: (f64, f64),
    b: (f64, f64),
    (x0, y0, x1, y1): (f64, f64, f64, f64),
) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a.0 - x0),
        (dx, x1 - a.0),
        (-dy, a.1 - y0),
        (dy, y1 - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
        }
    }
    (t0 <= t1).then_some((
        (a.0 + t0 * dx, a.1 + t0 * dy),
        (a.0 + t1 * dx, a.1 + t1 * dy),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_truncates_on_char_boundaries() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("ééééééééé", 5), "ééé..");
        assert_eq!(fit("a\nb", 10), "a b");
        assert_eq!(fit("abcdef", 2), "ab");
        assert_eq!(fit("abcdef", -3), "");
    }

    #[test]
    fn clip_keeps_inside_part() {
        let r = (0.0, 0.0, 10.0, 10.0);
        assert_eq!(
            clip((-10.0, 5.0), (20.0, 5.0), r),
            Some(((0.0, 5.0), (10.0, 5.0)))
        );
        assert_eq!(clip((-10.0, -5.0), (-1.0, -5.0), r), None);
    }
}
