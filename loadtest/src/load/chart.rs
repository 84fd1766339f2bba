//! The SVG chart: one panel per run, one bar per target with its median tps, drawn with
//! plotters' SVG backend (no bitmap backends, no font files).

use std::path::Path;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::{Report, ScenarioReport};

const WIDTH: u32 = 900;
const PANEL_HEIGHT: u32 = 260;

/// Renders [`render_svg`] into `path`.
///
/// # Errors
/// Drawing failed or the file cannot be written.
pub fn write_svg(report: &Report, path: &Path) -> anyhow::Result<()> {
    let svg = render_svg(report)?;
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

/// The chart as an SVG document: one panel per run (titled with its label), bars of median
/// tps per target, each bar labelled with its value.
///
/// # Errors
/// plotters failed to lay out the chart.
pub fn render_svg(report: &Report) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let panels = u32::try_from(report.runs.len().max(1)).unwrap_or(1);
        let root =
            SVGBackend::with_string(&mut svg, (WIDTH, PANEL_HEIGHT * panels)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let areas = root.split_evenly((report.runs.len().max(1), 1));
        for (run, area) in report.runs.iter().zip(&areas) {
            draw_run(run, area)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn draw_run(run: &ScenarioReport, area: &DrawingArea<SVGBackend<'_>, Shift>) -> anyhow::Result<()> {
    let n = run.targets.len();
    let top = run
        .targets
        .iter()
        .map(|t| t.tps)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.2;
    let names: Vec<String> = run.targets.iter().map(|t| t.name.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{} — median tps", run.label), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d((0..n).into_segmented(), 0f64..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .y_desc("tps")
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(plot_error)?;
    for (i, t) in run.targets.iter().enumerate() {
        let color = Palette99::pick(i).filled();
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), t.tps),
            ],
            color,
        );
        bar.set_margin(0, 0, 25, 25);
        chart
            .draw_series(std::iter::once(bar))
            .map_err(plot_error)?;
        let label = match t.tps_ratio {
            Some(r) if i > 0 => format!("{:.0} ({r:.2}x)", t.tps),
            _ => format!("{:.0}", t.tps),
        };
        chart
            .draw_series(std::iter::once(Text::new(
                label,
                (SegmentValue::CenterOf(i), t.tps + top * 0.03),
                TextStyle::from(("sans-serif", 14).into_font())
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )))
            .map_err(plot_error)?;
    }
    Ok(())
}

fn plot_error<E: std::fmt::Display>(err: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {err}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::report::TargetSummary;
    use crate::load::stats::Percentiles;

    fn target(name: &str, tps: f64) -> TargetSummary {
        TargetSummary {
            name: name.into(),
            tps,
            tps_rounds: vec![tps],
            tps_ratio: Some(tps / 1000.0),
            transactions: 1,
            errors: 0,
            latency: Percentiles::default(),
            cpu_us_per_tx: None,
            cpu_ratio: None,
            peak_rss_kib: None,
            hwm_kib: None,
            idle_kib_per_client: None,
        }
    }

    #[test]
    fn svg_has_a_panel_per_run_and_a_label_per_target() {
        let run = |label: &str| ScenarioReport {
            label: label.into(),
            scenario: "select".into(),
            clients: 10,
            idle_clients: 0,
            duration_s: 1.0,
            warmup_s: 0.0,
            rounds: 1,
            targets: vec![target("direct", 1000.0), target("sidepool", 800.0)],
        };
        let report = Report {
            runs: vec![run("select, 10 clients"), run("tpcb, 10 clients")],
        };
        let svg = render_svg(&report).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60.min(svg.len())]);
        assert!(svg.contains("select, 10 clients"));
        assert!(svg.contains("tpcb, 10 clients"));
        assert!(svg.contains("sidepool") && svg.contains("direct"));
        assert!(svg.contains("800 (0.80x)"));
    }
}
