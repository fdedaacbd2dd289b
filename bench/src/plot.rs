//! A small SVG line chart: axes with ticks, one polyline with markers per series,
//! a legend. No fonts are embedded; the viewer's sans-serif draws the text.

use std::fmt::Write as _;

/// One line.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: &'static str,
    pub dashed: bool,
}

/// A chart; `log_x` spaces the x values by their logarithm (e.g. 1, 4, 16, 64),
/// `log_y` puts the y axis on a log scale (ticks at 1, 2 and 5 times powers of ten).
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
}

const W: f64 = 640.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `n` ticks.
fn step(max: f64, n: f64) -> f64 {
    let raw = max / n;
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

fn label(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Chart {
    /// The chart as a standalone SVG document.
    pub fn svg(&self) -> String {
        let tx = |x: f64| if self.log_x { x.max(1e-9).log2() } else { x };
        let xs: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .collect();
        let (x0, x1) = xs.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| {
            (a.min(tx(x)), b.max(tx(x)))
        });
        let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
        let ys: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .collect();
        let ymax = ys.iter().copied().fold(0.0f64, f64::max);
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let px = |x: f64| LEFT + (tx(x) - x0) / (x1 - x0) * pw;
        // The y range, its ticks and the y transform.
        let (ylo, yhi, yticks): (f64, f64, Vec<f64>) = if self.log_y {
            let ymin = ys.iter().copied().filter(|y| *y > 0.0).fold(ymax, f64::min);
            let (k0, k1) = (
                ymin.max(1e-9).log10().floor() as i32,
                ymax.max(1e-9).log10().ceil() as i32,
            );
            let ticks = (k0..=k1)
                .flat_map(|k| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(k)))
                .filter(|v| *v <= 10f64.powi(k1))
                .collect();
            (10f64.powi(k0), 10f64.powi(k1.max(k0 + 1)), ticks)
        } else {
            let ystep = step(if ymax > 0.0 { ymax } else { 1.0 }, 5.0);
            let ytop = (ymax / ystep).ceil().max(1.0) * ystep;
            let n = (ytop / ystep).round() as usize;
            (0.0, ytop, (0..=n).map(|i| i as f64 * ystep).collect())
        };
        let log_y = self.log_y;
        let ty = move |y: f64| if log_y { y.max(1e-9).log10() } else { y };
        let py = |y: f64| TOP + ph - (ty(y) - ty(ylo)) / (ty(yhi) - ty(ylo)) * ph;

        let mut s = String::new();
        let _ = write!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
            LEFT + pw / 2.0,
            escape(&self.title)
        );
        // Horizontal grid lines and y ticks.
        for y in yticks {
            let yy = py(y);
            let _ = writeln!(
                s,
                "<line x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT + pw,
                LEFT - 6.0,
                yy + 4.0,
                label(y)
            );
        }
        // X ticks at every distinct x value.
        let mut ticks = xs.clone();
        ticks.sort_by(f64::total_cmp);
        ticks.dedup();
        for x in ticks {
            let xx = px(x);
            let _ = writeln!(
                s,
                "<line x1=\"{xx:.1}\" y1=\"{:.1}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>\
                 <text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                TOP + ph,
                TOP + ph + 5.0,
                TOP + ph + 19.0,
                label(x)
            );
        }
        // Axes and their labels.
        let _ = write!(
            s,
            "<path d=\"M{LEFT} {TOP}V{:.1}H{:.1}\" fill=\"none\" stroke=\"#333\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n\
             <text transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
            TOP + ph,
            LEFT + pw,
            LEFT + pw / 2.0,
            H - 14.0,
            escape(&self.x_label),
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        // The series, then the legend.
        for (i, se) in self.series.iter().enumerate() {
            let dash = if se.dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            };
            let pts: Vec<String> = se
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash}/>",
                pts.join(" "),
                se.color
            );
            for &(x, y) in &se.points {
                let _ = writeln!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                    px(x),
                    py(y),
                    se.color
                );
            }
            let ly = TOP + 10.0 + 20.0 * i as f64;
            let lx = W - RIGHT + 15.0;
            let _ = writeln!(
                s,
                "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"2\"{dash}/>\
                 <text x=\"{}\" y=\"{}\">{}</text>",
                lx + 24.0,
                se.color,
                lx + 30.0,
                ly + 4.0,
                escape(&se.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}
