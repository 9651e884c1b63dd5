//! Line charts as PNG for learning curves and run reports (no font or system library needed:
//! text uses a built-in 5×7 bitmap font).

use std::path::Path;

use crate::error::Context;

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: [u8; 3],
}

/// A chart: lines, optional horizontal reference lines and a vertical marker.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Horizontal reference lines: (y, label, colour).
    pub hlines: Vec<(f64, String, [u8; 3])>,
    /// Vertical markers: (x, label).
    pub vlines: Vec<(f64, String)>,
}

pub const BLUE: [u8; 3] = [31, 119, 180];
pub const ORANGE: [u8; 3] = [255, 127, 14];
pub const GREEN: [u8; 3] = [44, 160, 44];
pub const RED: [u8; 3] = [214, 39, 40];
pub const GREY: [u8; 3] = [120, 120, 120];

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3], thick: i64) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for i in 0..=n {
            let t = i as f64 / n as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            for dx in 0..thick {
                for dy in 0..thick {
                    self.set(
                        x.round() as i64 + dx - thick / 2,
                        y.round() as i64 + dy - thick / 2,
                        c,
                    );
                }
            }
        }
    }
    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3], scale: i64) {
        let mut cx = x;
        for ch in s.chars() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        for sx in 0..scale {
                            for sy in 0..scale {
                                self.set(cx + col * scale + sx, y + row as i64 * scale + sy, c);
                            }
                        }
                    }
                }
            }
            cx += 6 * scale;
        }
    }
    fn text_width(s: &str, scale: i64) -> i64 {
        s.chars().count() as i64 * 6 * scale
    }
    /// Text rotated 90° counter-clockwise (for the y-axis label), starting at the bottom.
    fn text_up(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        let mut cy = y;
        for ch in s.chars() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        self.set(x + row as i64, cy - col, c);
                    }
                }
            }
            cy -= 6;
        }
    }
}

/// A "nice" tick step for a range.
fn tick_step(range: f64, target: usize) -> f64 {
    let raw = range / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.5 {
        2.0
    } else if norm < 7.5 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64, step: f64) -> String {
    if v.abs() >= 10_000.0 && (v / 1000.0).fract().abs() < 1e-9 {
        format!("{}k", (v / 1000.0) as i64)
    } else if step >= 1.0 {
        format!("{}", v.round() as i64)
    } else {
        let d = (-step.log10().floor()) as usize;
        format!("{v:.d$}")
    }
}

/// Draws the chart to a PNG of `width`×`height` pixels.
pub fn render_png(chart: &Chart, width: usize, height: usize, path: &Path) -> crate::Result<()> {
    let mut cv = Canvas {
        w: width,
        h: height,
        px: vec![255; width * height * 3],
    };
    let (left, right, top, bottom) = (70.0, 20.0, 40.0, 60.0);
    let (pw, ph) = (width as f64 - left - right, height as f64 - top - bottom);
    let pts = chart.series.iter().flat_map(|s| s.points.iter().copied());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    for (y, _, _) in &chart.hlines {
        (y0, y1) = (y0.min(*y), y1.max(*y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    (y0, y1) = (y0 - pad, y1 + pad);
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| top + (1.0 - (y - y0) / (y1 - y0)) * ph;
    let axis = [40, 40, 40];
    let grid = [225, 225, 225];
    let ys = tick_step(y1 - y0, 6);
    let mut t = (y0 / ys).ceil() * ys;
    while t <= y1 {
        cv.line((left, sy(t)), (left + pw, sy(t)), grid, 1);
        let s = fmt_tick(t, ys);
        cv.text(
            left as i64 - 8 - Canvas::text_width(&s, 1),
            sy(t) as i64 - 3,
            &s,
            axis,
            1,
        );
        t += ys;
    }
    let xs = tick_step(x1 - x0, 8);
    let mut t = (x0 / xs).ceil() * xs;
    while t <= x1 + 1e-9 {
        cv.line((sx(t), top), (sx(t), top + ph), grid, 1);
        let s = fmt_tick(t, xs);
        cv.text(
            sx(t) as i64 - Canvas::text_width(&s, 1) / 2,
            (top + ph) as i64 + 8,
            &s,
            axis,
            1,
        );
        t += xs;
    }
    cv.line((left, top + ph), (left + pw, top + ph), axis, 1);
    cv.line((left, top), (left, top + ph), axis, 1);
    for (x, label) in &chart.vlines {
        let px = sx(*x);
        let mut y = top;
        while y < top + ph {
            cv.line((px, y), (px, (y + 4.0).min(top + ph)), GREY, 1);
            y += 8.0;
        }
        cv.text(px as i64 + 4, top as i64 + 4, label, GREY, 1);
    }
    for (y, label, c) in &chart.hlines {
        let py = sy(*y);
        let mut x = left;
        while x < left + pw {
            cv.line((x, py), ((x + 6.0).min(left + pw), py), *c, 1);
            x += 10.0;
        }
        cv.text(
            (left + pw) as i64 - Canvas::text_width(label, 1) - 4,
            py as i64 - 10,
            label,
            *c,
            1,
        );
    }
    for s in &chart.series {
        let p: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| (sx(*x), sy(*y)))
            .collect();
        for w in p.windows(2) {
            cv.line(w[0], w[1], s.color, 2);
        }
        if p.len() == 1 {
            cv.line(p[0], p[0], s.color, 4);
        }
    }
    // Legend, title, axis labels.
    let mut ly = top as i64 + 8;
    for s in &chart.series {
        let lx = left as i64 + 10;
        cv.line(
            (lx as f64, ly as f64 + 3.0),
            (lx as f64 + 16.0, ly as f64 + 3.0),
            s.color,
            3,
        );
        cv.text(lx + 22, ly, &s.label, axis, 1);
        ly += 12;
    }
    let tw = Canvas::text_width(&chart.title, 2);
    cv.text((width as i64 - tw) / 2, 10, &chart.title, axis, 2);
    let xw = Canvas::text_width(&chart.x_label, 1);
    cv.text(
        left as i64 + (pw as i64 - xw) / 2,
        height as i64 - 22,
        &chart.x_label,
        axis,
        1,
    );
    cv.text_up(
        12,
        top as i64 + (ph as i64 + Canvas::text_width(&chart.y_label, 1)) / 2,
        &chart.y_label,
        axis,
    );

    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).context(|| format!("cannot create {}", d.display()))?;
    }
    let f = std::fs::File::create(path).context(|| format!("cannot create {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), width as u32, height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&cv.px)?;
    Ok(())
}

/// 5×7 glyphs (rows top to bottom, bit 4 = leftmost column). Lower case draws as upper case.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F],
        '<' => [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        '>' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        '|' => [0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        '*' => [0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00],
        ' ' => [0; 7],
        _ => [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F],
    }
}

/// Reads (step, value) pairs of one column of a metrics CSV written by the learner (rows with
/// an empty value are skipped).
pub fn csv_column(path: &Path, x: &str, y: &str) -> crate::Result<Vec<(f64, f64)>> {
    let text =
        std::fs::read_to_string(path).context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |n: &str| {
        header
            .iter()
            .position(|h| *h == n)
            .context(|| format!("{}: no column {n:?}", path.display()))
    };
    let (xi, yi) = (col(x)?, col(y)?);
    Ok(lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some((f.get(xi)?.parse().ok()?, f.get(yi)?.parse().ok()?))
        })
        .collect())
}
