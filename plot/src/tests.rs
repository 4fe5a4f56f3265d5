//! End-to-end tests: rendered pixels and written PNG files.

use std::fs;
use std::path::PathBuf;

use crate::render::{layout, PALETTE};
use crate::{write_grid, Chart, Scale, Series};

/// A fresh empty folder under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("plot-test-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn decode(path: &std::path::Path) -> (u32, u32, Vec<u8>) {
    let file = std::io::BufReader::new(fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

fn pixel(rgb: &[u8], w: u32, x: i64, y: i64) -> [u8; 3] {
    let i = (y as usize * w as usize + x as usize) * 3;
    [rgb[i], rgb[i + 1], rgb[i + 2]]
}

fn line_chart() -> Chart {
    let mut c = Chart::new("reward", "step", "mean reward");
    c.series.push(Series::new(
        "run",
        (0..20)
            .map(|i| (i as f64 * 10.0, (i as f64 / 19.0).sqrt()))
            .collect(),
    ));
    c
}

#[test]
fn png_decodes_with_the_right_size() {
    let dir = temp_dir("size");
    let path = dir.join("chart.png");
    let mut c = line_chart();
    c.width = 640;
    c.height = 360;
    c.write_png(&path).unwrap();
    let (w, h, rgb) = decode(&path);
    assert_eq!((w, h), (640, 360));
    assert_eq!(rgb.len(), 640 * 360 * 3);
    // Same pixels as render_rgb.
    assert_eq!(c.render_rgb(), (w, h, rgb));
    // Overwriting goes through a temp file and leaves nothing else behind.
    c.write_png(&path).unwrap();
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("chart.png")]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn series_pixels_stay_inside_the_plot_area() {
    let c = line_chart();
    let (w, h, rgb) = c.render_rgb();
    let l = layout(&c);
    let blue = PALETTE[0];
    let mut inside = 0;
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            if pixel(&rgb, w, x, y) == blue {
                assert!(
                    l.plot.contains(x, y),
                    "series color at ({x}, {y}) outside {:?}",
                    l.plot
                );
                inside += 1;
            }
        }
    }
    assert!(inside > 100, "only {inside} series pixels");
    // A known point lands where the axes say: its marker's centre is series-colored.
    let (px, py) = (
        l.x.pos(90.0).unwrap(),
        l.y.pos((9.0f64 / 19.0).sqrt()).unwrap(),
    );
    assert_eq!(pixel(&rgb, w, px as i64, py as i64), blue);
    // Right of the last point (x = 190) and above the top value nothing is drawn.
    let right = l.x.pos(190.0).unwrap() as i64 + 5;
    assert!((l.plot.y0..l.plot.y1).all(|y| pixel(&rgb, w, right, y) != blue));
}

#[test]
fn legend_and_band_appear() {
    let mut c = line_chart();
    let mut b = Series::new(
        "run b with a fairly long label",
        vec![(0.0, 0.2), (190.0, 0.6)],
    );
    b.band = Some(vec![(0.0, 0.1, 0.3), (190.0, 0.5, 0.7)]);
    c.series.push(b);
    let (w, h, rgb) = c.render_rgb();
    let l = layout(&c);
    // Legend swatches sit outside the plot area, in each series' color.
    for color in [PALETTE[0], PALETTE[1]] {
        let outside = (0..h as i64)
            .flat_map(|y| (0..w as i64).map(move |x| (x, y)))
            .filter(|&(x, y)| !l.plot.contains(x, y) && pixel(&rgb, w, x, y) == color)
            .count();
        assert!(outside > 10, "no legend swatch in {color:?}");
    }
    // The band is tinted: between low and high, away from the line, it is a
    // light orange (red highest, blue lowest, but paler than the line).
    let (x, y) = (l.x.pos(95.0).unwrap() as i64, l.y.pos(0.48).unwrap() as i64);
    let [r, g, bl] = pixel(&rgb, w, x, y);
    assert!(
        r > 230 && bl < r && g < r && bl > 150,
        "band pixel {:?}",
        [r, g, bl]
    );
}

#[test]
fn bad_inputs_do_not_panic() {
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    let long = "a very long label ".repeat(50);
    let mut charts = Vec::new();
    // No series at all, and a series with no points.
    charts.push(Chart::new("", "", ""));
    let mut c = Chart::new("empty", "x", "y");
    c.series.push(Series::new("nothing", vec![]));
    charts.push(c);
    // Single point, equal values, NaN/inf everywhere.
    for pts in [
        vec![(1.0, 2.0)],
        vec![(0.0, 3.0), (1.0, 3.0), (2.0, 3.0)],
        vec![(nan, 1.0), (1.0, nan), (inf, 2.0), (2.0, -inf), (3.0, 0.5)],
        vec![(nan, nan)],
        vec![(0.0, 0.0), (0.0, 0.0)],
        vec![(-1e300, 1e300), (1e300, -1e300)],
        vec![(f64::MAX, f64::MAX), (f64::MIN, f64::MIN)],
        vec![(1e-300, 1e-300), (2e-300, 3e-300)],
    ] {
        for (xs, ys) in [
            (Scale::Linear, Scale::Linear),
            (Scale::Log10, Scale::Log10),
            (Scale::Linear, Scale::Log10),
        ] {
            let mut c = Chart::new(&long, &long, &long);
            c.x_scale = xs;
            c.y_scale = ys;
            c.series.push(Series {
                label: long.clone(),
                points: pts.clone(),
                band: Some(vec![(nan, 1.0, 2.0), (1.0, -1.0, inf)]),
            });
            c.series
                .push(Series::new("", pts.iter().map(|&(x, y)| (x, -y)).collect()));
            charts.push(c);
        }
    }
    // Log axes with only non-positive values; a reversed or bad y range.
    let mut c = Chart::new("log", "lr", "loss");
    c.x_scale = Scale::Log10;
    c.y_scale = Scale::Log10;
    c.series
        .push(Series::new("neg", vec![(-1.0, -2.0), (0.0, 0.0)]));
    c.y_range = Some((-1.0, 0.0));
    charts.push(c);
    let mut c = line_chart();
    c.y_range = Some((1.0, 0.0));
    charts.push(c);
    let mut c = line_chart();
    c.y_range = Some((0.4, 0.5)); // most of the line off the plot: clipped
    charts.push(c);
    // Many series: legend overflows to "+N more".
    let mut c = line_chart();
    for i in 0..40 {
        c.series.push(Series::new(
            format!("seed {i}"),
            vec![(0.0, i as f64), (1.0, i as f64 + 1.0)],
        ));
    }
    charts.push(c);
    // Tiny, zero and huge sizes.
    for (w, h) in [(0, 0), (1, 1), (60, 40), (20000, 10)] {
        let mut c = line_chart();
        c.width = w;
        c.height = h;
        charts.push(c);
    }
    for c in &charts {
        let (w, h, rgb) = c.render_rgb();
        assert_eq!(rgb.len(), w as usize * h as usize * 3);
    }
    // A 10-x-4 grid of them still writes and decodes.
    let dir = temp_dir("bad");
    let path = dir.join("grid.png");
    write_grid(&path, &charts[..6], 4).unwrap();
    let (w, h, _) = decode(&path);
    assert_eq!((w, h), (4 * 800, 2 * 500));
    assert!(write_grid(&path, &[], 2).is_err());
    assert!(line_chart()
        .write_png(&dir.join("missing-folder/x.png"))
        .is_err());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn grid_places_charts_in_cells() {
    let dir = temp_dir("grid");
    let path = dir.join("grid.png");
    let mut a = line_chart();
    a.width = 300;
    a.height = 200;
    let mut b = line_chart();
    b.width = 400;
    b.height = 250;
    // columns = 0 is taken as 1; more columns than charts as one row.
    write_grid(&path, &[a.clone(), b.clone(), a.clone()], 0).unwrap();
    assert_eq!(decode(&path).0, 400);
    assert_eq!(decode(&path).1, 750);
    write_grid(&path, &[a.clone(), b.clone()], 5).unwrap();
    let (w, h, rgb) = decode(&path);
    assert_eq!((w, h), (800, 250));
    // The first cell holds chart a's pixels unchanged.
    let (aw, _, arg) = a.render_rgb();
    assert_eq!(pixel(&rgb, w, 150, 100), pixel(&arg, aw, 150, 100));
    fs::remove_dir_all(&dir).unwrap();
}
