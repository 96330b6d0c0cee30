//! Plots of a run (latency CDFs, tokens/s over time, failovers, earnings across workers,
//! announcement propagation) and of a sweep, each as PNG and SVG through `plotters`.
//!
//! Text needs a TrueType font, read at run time (nothing is embedded): `$COCOON_SIM_FONT`,
//! else DejaVu Sans or Liberation Sans from `/usr/share/fonts`. Without one, plots are
//! skipped with a warning and everything else is still written.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::metrics::{Outcome, Recorder, SweepPoint};
use crate::scenario::Scenario;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a font once; the path used, or why none.
fn font() -> Result<&'static PathBuf, &'static str> {
    static FONT: OnceLock<Result<PathBuf, &'static str>> = OnceLock::new();
    FONT.get_or_init(|| {
        let mut paths: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("COCOON_SIM_FONT") {
            paths.push(p.into());
        }
        paths.extend(FONT_PATHS.iter().map(PathBuf::from));
        for p in paths {
            if let Ok(bytes) = std::fs::read(&p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(p);
                }
            }
        }
        Err("no TrueType font found (set COCOON_SIM_FONT to a .ttf file)")
    })
    .as_ref()
    .map_err(|e| *e)
}

/// Line colours (Tableau 10), distinguishable in print.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// A chart of one or more lines.
pub struct Lines {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

fn bounds(series: &[(String, Vec<(f64, f64)>)], log_x: bool) -> ((f64, f64), (f64, f64)) {
    let pts = series.iter().flat_map(|(_, v)| v.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, 0.0f64, f64::MIN);
    for &(x, y) in pts {
        if log_x && x <= 0.0 {
            continue;
        }
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1) = (if log_x { 1.0 } else { 0.0 }, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 * 1.1 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    ((x0, x1), (y0, y1 * 1.05))
}

fn draw<DB: DrawingBackend>(area: DrawingArea<DB, Shift>, c: &Lines) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing: {x:?}");
    area.fill(&WHITE).map_err(e)?;
    let ((x0, x1), (y0, y1)) = bounds(&c.series, c.log_x);
    let mut b = ChartBuilder::on(&area);
    b.caption(&c.title, ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(c.x_label.as_str())
                .y_desc(c.y_label.as_str())
                .label_style(("sans-serif", 16))
                .axis_desc_style(("sans-serif", 18))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(e)?;
            for (i, (name, pts)) in c.series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()].to_rgba();
                let pts: Vec<(f64, f64)> = pts
                    .iter()
                    .copied()
                    .filter(|&(x, _)| !c.log_x || x > 0.0)
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                    .map_err(e)?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            if c.series.len() > 1 {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 16))
                    .position(SeriesLabelPosition::LowerRight)
                    .draw()
                    .map_err(e)?;
            }
        }};
    }
    if c.log_x {
        body!(
            b.build_cartesian_2d((x0..x1).log_scale(), y0..y1)
                .map_err(e)?
        );
    } else {
        body!(b.build_cartesian_2d(x0..x1, y0..y1).map_err(e)?);
    }
    area.present().map_err(e)?;
    Ok(())
}

/// Writes `dir/name.png` and `dir/name.svg`.
pub fn save(dir: &Path, name: &str, chart: &Lines) -> anyhow::Result<()> {
    let png = dir.join(format!("{name}.png"));
    draw(
        BitMapBackend::new(&png, (1200, 800)).into_drawing_area(),
        chart,
    )?;
    let svg = dir.join(format!("{name}.svg"));
    draw(
        SVGBackend::new(&svg, (1200, 800)).into_drawing_area(),
        chart,
    )?;
    Ok(())
}

fn cdf(mut v: Vec<f64>) -> Vec<(f64, f64)> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    // At most ~2000 points per curve.
    let step = (v.len() / 2000).max(1);
    let mut out: Vec<(f64, f64)> = v
        .iter()
        .enumerate()
        .step_by(step)
        .map(|(i, x)| (*x, (i + 1) as f64 / n))
        .collect();
    if let Some(last) = v.last() {
        out.push((*last, 1.0));
    }
    out
}

/// Draws every plot of a run into `out`; warns and skips them without a font.
pub fn draw_all(rec: &Recorder, sc: &Scenario, out: &Path) -> anyhow::Result<()> {
    if let Err(why) = font() {
        eprintln!("warning: plots skipped: {why}");
        return Ok(());
    }
    let done = rec
        .requests
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Ok | Outcome::Wrong));
    let (mut ttft, mut per, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for r in done {
        ttft.push(r.ttft_ms);
        per.push(r.per_token_ms);
        total.push(r.total_ms);
    }
    let name = &sc.name;
    save(
        out,
        "latency_cdf",
        &Lines {
            title: format!("{name}: latency CDF (completed requests)"),
            x_label: "milliseconds (log scale)".into(),
            y_label: "fraction of requests".into(),
            log_x: true,
            series: vec![
                ("time per output token".into(), cdf(per)),
                ("time to first token".into(), cdf(ttft)),
                ("whole request".into(), cdf(total)),
            ],
        },
    )?;
    let bin_s = sc.bin_s;
    let t = |f: &dyn Fn(&crate::metrics::BinRow) -> f64| -> Vec<(f64, f64)> {
        rec.bins.iter().map(|b| (b.t_s / 60.0, f(b))).collect()
    };
    save(
        out,
        "tokens_per_s",
        &Lines {
            title: format!("{name}: output tokens delivered per second"),
            x_label: "simulated minutes".into(),
            y_label: "tokens / s".into(),
            log_x: false,
            series: vec![("tokens/s".into(), t(&|b| b.tokens as f64 / bin_s))],
        },
    )?;
    save(
        out,
        "failovers",
        &Lines {
            title: format!("{name}: failovers, failed requests and bans per {bin_s} s"),
            x_label: "simulated minutes".into(),
            y_label: "count per bin".into(),
            log_x: false,
            series: vec![
                ("failovers".into(), t(&|b| b.failovers as f64)),
                ("failed requests".into(), t(&|b| b.failed as f64)),
                ("bans".into(), t(&|b| b.bans as f64)),
            ],
        },
    )?;
    let mut earned: Vec<f64> = rec
        .workers
        .iter()
        .map(|w| w.earned_nanoton as f64)
        .collect();
    earned.sort_by(f64::total_cmp);
    let total_e: f64 = earned.iter().sum();
    let n = earned.len() as f64;
    let mut acc = 0.0;
    let mut lorenz = vec![(0.0, 0.0)];
    let step = (earned.len() / 2000).max(1);
    for (i, e) in earned.iter().enumerate() {
        acc += e;
        if i % step == 0 || i + 1 == earned.len() {
            lorenz.push((
                (i + 1) as f64 / n,
                if total_e > 0.0 { acc / total_e } else { 0.0 },
            ));
        }
    }
    let g = crate::metrics::gini(&earned);
    save(
        out,
        "earnings",
        &Lines {
            title: format!("{name}: earnings across workers (Lorenz curve, Gini {g:.2})"),
            x_label: "share of workers, poorest first".into(),
            y_label: "share of all earnings".into(),
            log_x: false,
            series: vec![
                ("workers".into(), lorenz),
                ("equal earnings".into(), vec![(0.0, 0.0), (1.0, 1.0)]),
            ],
        },
    )?;
    let p = |f: &dyn Fn(&crate::metrics::PropagationRow) -> f64| -> Vec<(f64, f64)> {
        rec.propagation
            .iter()
            .map(|r| (r.t_s / 60.0, f(r)))
            .collect()
    };
    save(
        out,
        "propagation",
        &Lines {
            title: format!("{name}: announcement propagation over the gossip mesh"),
            x_label: "simulated minutes (sampled announcements)".into(),
            y_label: "ms until reached".into(),
            log_x: false,
            series: vec![
                ("50 % of nodes".into(), p(&|r| r.p50_ms)),
                ("90 %".into(), p(&|r| r.p90_ms)),
                ("99 %".into(), p(&|r| r.p99_ms)),
                ("all reached".into(), p(&|r| r.max_ms)),
            ],
        },
    )?;
    Ok(())
}

/// Draws a sweep's headline metrics against the parameter (numeric values only).
pub fn draw_sweep(name: &str, points: &[SweepPoint], out: &Path) -> anyhow::Result<()> {
    if let Err(why) = font() {
        eprintln!("warning: plots skipped: {why}");
        return Ok(());
    }
    let xs: Option<Vec<f64>> = points.iter().map(|p| p.value.parse().ok()).collect();
    let Some(xs) = xs else {
        eprintln!("warning: sweep plots need numeric values; see sweep.csv");
        return Ok(());
    };
    let s = |f: &dyn Fn(&crate::metrics::Summary) -> f64| -> Vec<(f64, f64)> {
        xs.iter()
            .zip(points)
            .map(|(x, p)| (*x, f(&p.summary)))
            .collect()
    };
    save(
        out,
        "sweep_latency",
        &Lines {
            title: format!("per-token latency against {name}"),
            x_label: name.into(),
            y_label: "ms per output token".into(),
            log_x: false,
            series: vec![
                ("p50".into(), s(&|m| m.latency_ms.per_token_p50)),
                ("p99".into(), s(&|m| m.latency_ms.per_token_p99)),
            ],
        },
    )?;
    save(
        out,
        "sweep_success",
        &Lines {
            title: format!("requests completed correctly against {name}"),
            x_label: name.into(),
            y_label: "share of requests".into(),
            log_x: false,
            series: vec![("success rate".into(), s(&|m| m.requests.success_rate))],
        },
    )?;
    Ok(())
}
