//! Loss curve as a self-contained SVG (no plotting dependency): training
//! loss as a line, validation loss as a line with markers, axes with "nice"
//! 1-2-5 ticks, labels and a title.

use std::fmt::Write as _;
use std::path::Path;

use crate::fsutil::{write_atomic, FsError};
use crate::metrics::MetricsRecord;

/// File name of the plot inside a run directory.
pub const PLOT_FILE: &str = "loss.svg";

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 500.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 45.0;
const BOTTOM: f64 = 55.0;
const TRAIN_COLOR: &str = "#1f77b4";
const VAL_COLOR: &str = "#ff7f0e";

/// Escapes text for SVG element content and attribute values.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Tick values covering `[lo, hi]`: multiples of a 1-2-5 step, about
/// `target` of them.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo || target == 0 {
        return vec![lo];
    }
    // Heckbert's "nice numbers": round the raw step to 1, 2, 5 or 10 times
    // a power of ten.
    let raw = (hi - lo) / target as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let frac = raw / mag;
    let nice = if frac < 1.5 {
        1.0
    } else if frac < 3.0 {
        2.0
    } else if frac < 7.0 {
        5.0
    } else {
        10.0
    };
    let step = nice * mag;
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn fmt_tick(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

/// Renders the loss curve of `records` (train and, where present,
/// validation loss against step). Non-finite losses are left out; with no
/// plottable point the chart says so.
pub fn loss_svg(records: &[MetricsRecord], title: &str) -> String {
    let train: Vec<(f64, f64)> = records
        .iter()
        .filter(|r| r.train_loss.is_finite())
        .map(|r| (r.step as f64, r.train_loss))
        .collect();
    let val: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| {
            r.val_loss
                .filter(|v| v.is_finite())
                .map(|v| (r.step as f64, v))
        })
        .collect();

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="16">{}</text>"#,
        WIDTH / 2.0,
        xml_escape(title)
    );

    let all = train.iter().chain(val.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let pw = WIDTH - LEFT - RIGHT;
    let ph = HEIGHT - TOP - BOTTOM;
    let _ = writeln!(
        svg,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    if train.is_empty() && val.is_empty() {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">no data yet</text>"#,
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
        svg.push_str("</svg>\n");
        return svg;
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = if y1 > y0 { 0.05 * (y1 - y0) } else { 0.5 };
    y0 -= pad;
    y1 += pad;
    let f = Frame {
        x0,
        x1,
        y0,
        y1,
        pw,
        ph,
    };
    draw_axes(&mut svg, &f);

    let polyline = |svg: &mut String, pts: &[(f64, f64)], color: &str| {
        let mut s = String::new();
        for &(x, y) in pts {
            let _ = write!(s, "{:.1},{:.1} ", f.sx(x), f.sy(y));
        }
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            s.trim_end()
        );
    };
    if !train.is_empty() {
        polyline(&mut svg, &train, TRAIN_COLOR);
    }
    if !val.is_empty() {
        polyline(&mut svg, &val, VAL_COLOR);
        for &(x, y) in &val {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{VAL_COLOR}"/>"#,
                f.sx(x),
                f.sy(y)
            );
        }
    }

    draw_legend(&mut svg, pw, !train.is_empty(), !val.is_empty());
    svg.push_str("</svg>\n");
    svg
}

/// The data range on screen: `x0..x1` by `y0..y1` in a `pw` × `ph` plot
/// area at (`LEFT`, `TOP`).
struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
    pw: f64,
    ph: f64,
}

impl Frame {
    fn sx(&self, x: f64) -> f64 {
        LEFT + (x - self.x0) / (self.x1 - self.x0) * self.pw
    }
    fn sy(&self, y: f64) -> f64 {
        TOP + self.ph - (y - self.y0) / (self.y1 - self.y0) * self.ph
    }
}

/// Grid, ticks, tick labels and axis titles.
fn draw_axes(svg: &mut String, f: &Frame) {
    let (x0, x1, y0, y1, pw, ph) = (f.x0, f.x1, f.y0, f.y1, f.pw, f.ph);
    let xt = nice_ticks(x0, x1, 8);
    let xstep = if xt.len() > 1 { xt[1] - xt[0] } else { 1.0 };
    for &t in &xt {
        let x = f.sx(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e0e0e0"/><line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="black"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph,
            TOP + ph + 5.0,
            TOP + ph + 19.0,
            fmt_tick(t, xstep.max(1.0))
        );
    }
    let yt = nice_ticks(y0, y1, 6);
    let ystep = if yt.len() > 1 { yt[1] - yt[0] } else { 1.0 };
    for &t in &yt {
        let y = f.sy(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/><line x1="{:.1}" y1="{y:.1}" x2="{LEFT}" y2="{y:.1}" stroke="black"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 5.0,
            LEFT - 8.0,
            y + 4.0,
            fmt_tick(t, ystep)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">step</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 12.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">loss</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
}

/// The legend, top right inside the plot area.
fn draw_legend(svg: &mut String, pw: f64, train: bool, val: bool) {
    let lx = LEFT + pw - 120.0;
    let mut ly = TOP + 15.0;
    for (label, color, present) in [
        ("train loss", TRAIN_COLOR, train),
        ("val loss", VAL_COLOR, val),
    ] {
        if !present {
            continue;
        }
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{label}</text>"#,
            lx + 25.0,
            lx + 32.0,
            ly + 4.0
        );
        ly += 18.0;
    }
}

/// Writes [`loss_svg`] to `path` atomically.
pub fn write_loss_svg(path: &Path, records: &[MetricsRecord], title: &str) -> Result<(), FsError> {
    write_atomic(path, loss_svg(records, title).as_bytes())
}
