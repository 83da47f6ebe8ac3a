//! Small inline SVG charts for reports and pages: no script, no external asset, readable
//! printed. Each chart is drawn from numbers alone; every label is escaped.

use std::fmt::Write as _;

/// One bar or point: its label (shown in a `<title>` and, for bars, under the axis when
/// there is room) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// What the value is of.
    pub label: String,
    /// The value, zero or more.
    pub value: f64,
}

/// One series of a stacked chart: its name, its colour and a value per column.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its name, in the legend.
    pub name: String,
    /// A CSS colour.
    pub colour: &'static str,
    /// A value per column.
    pub values: Vec<f64>,
}

/// Escapes text for SVG (XML) content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The largest value, at least 1 (an all-zero chart still has an axis).
fn top(values: impl Iterator<Item = f64>) -> f64 {
    values.filter(|v| v.is_finite()).fold(1.0_f64, f64::max)
}

fn clean(value: f64) -> f64 {
    if value.is_finite() && value > 0.0 {
        value
    } else {
        0.0
    }
}

/// A bar chart, `width` × `height` px: one bar per point, the largest value on top, each
/// bar's label and value in its tooltip.
pub fn bars(title: &str, points: &[Point], width: u32, height: u32, colour: &str) -> String {
    let (w, h) = (f64::from(width.max(40)), f64::from(height.max(30)));
    let max = top(points.iter().map(|p| p.value));
    let axis = 14.0;
    // Room above the bars for the scale.
    let head = 12.0;
    let plot = h - axis;
    let n = points.len().max(1) as f64;
    let step = w / n;
    let gap = (step * 0.15).min(4.0);
    let mut svg = open(title, w, h);
    let _ = write!(
        svg,
        r#"<line x1="0" y1="{plot:.1}" x2="{w:.1}" y2="{plot:.1}" stroke="rgb(153,153,153)" stroke-width="1"/>"#
    );
    for (i, point) in points.iter().enumerate() {
        let value = clean(point.value);
        let bar = (value / max * (plot - head)).max(if value > 0.0 { 1.0 } else { 0.0 });
        let x = i as f64 * step + gap / 2.0;
        let y = plot - bar;
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{bar:.1}" fill="{}"><title>{}: {}</title></rect>"#,
            (step - gap).max(1.0),
            escape(colour),
            escape(&point.label),
            number(value)
        );
    }
    if points.len() <= 12 {
        // Few bars: each is named under itself.
        for (i, point) in points.iter().enumerate() {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" fill="rgb(85,85,85)" text-anchor="middle">{}</text>"#,
                (i as f64 + 0.5) * step,
                h - 2.0,
                escape(&point.label)
            );
        }
    } else if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let _ = write!(
            svg,
            r#"<text x="0" y="{:.1}" font-size="10" fill="rgb(85,85,85)">{}</text><text x="{w:.1}" y="{:.1}" font-size="10" fill="rgb(85,85,85)" text-anchor="end">{}</text>"#,
            h - 2.0,
            escape(&first.label),
            h - 2.0,
            escape(&last.label)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{w:.1}" y="9" font-size="10" fill="rgb(85,85,85)" text-anchor="end">max {}</text>"#,
        number(max)
    );
    svg.push_str("</svg>");
    svg
}

/// A column marked on a chart: a dashed line before it, with what happened there in its
/// tooltip (a pack load that changed the rule, say).
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// The column, from 0.
    pub column: usize,
    /// What happened.
    pub label: String,
}

/// Columns of stacked series (rules by mode at each pack load, say), with a legend.
pub fn stacked(
    title: &str,
    columns: &[String],
    series: &[Series],
    width: u32,
    height: u32,
) -> String {
    stacked_marked(title, columns, series, &[], width, height)
}

/// [`stacked`], with `marks`: a dashed line at the left edge of each marked column.
pub fn stacked_marked(
    title: &str,
    columns: &[String],
    series: &[Series],
    marks: &[Mark],
    width: u32,
    height: u32,
) -> String {
    let (w, h) = (f64::from(width.max(60)), f64::from(height.max(40)));
    let legend = 16.0;
    let axis = 14.0;
    let plot = h - legend - axis;
    let totals = (0..columns.len()).map(|c| {
        series
            .iter()
            .map(|s| clean(s.values.get(c).copied().unwrap_or(0.0)))
            .sum::<f64>()
    });
    let max = top(totals);
    let n = columns.len().max(1) as f64;
    let step = w / n;
    let gap = (step * 0.15).min(4.0);
    let mut svg = open(title, w, h);
    let mut x_legend = 0.0;
    for s in series {
        let _ = write!(
            svg,
            r#"<rect x="{x_legend:.1}" y="2" width="10" height="10" fill="{}"/><text x="{:.1}" y="11" font-size="10" fill="rgb(51,51,51)">{}</text>"#,
            escape(s.colour),
            x_legend + 13.0,
            escape(&s.name)
        );
        x_legend += 13.0 + 7.0 * s.name.chars().count() as f64 + 12.0;
    }
    let base = legend + plot;
    let _ = write!(
        svg,
        r#"<line x1="0" y1="{base:.1}" x2="{w:.1}" y2="{base:.1}" stroke="rgb(153,153,153)" stroke-width="1"/>"#
    );
    for (c, column) in columns.iter().enumerate() {
        let x = c as f64 * step + gap / 2.0;
        let mut y = base;
        for s in series {
            let value = clean(s.values.get(c).copied().unwrap_or(0.0));
            if value == 0.0 {
                continue;
            }
            let part = value / max * (plot - 2.0);
            y -= part;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{part:.1}" fill="{}"><title>{}: {} {}</title></rect>"#,
                (step - gap).max(1.0),
                escape(s.colour),
                escape(column),
                number(value),
                escape(&s.name)
            );
        }
    }
    for mark in marks.iter().filter(|m| m.column < columns.len()) {
        let x = mark.column as f64 * step;
        let _ = write!(
            svg,
            r#"<line class="mark" x1="{x:.1}" y1="{legend:.1}" x2="{x:.1}" y2="{base:.1}" stroke="rgb(33,33,33)" stroke-width="1.5" stroke-dasharray="3,2"><title>{}</title></line>"#,
            escape(&mark.label)
        );
    }
    if let (Some(first), Some(last)) = (columns.first(), columns.last()) {
        let _ = write!(
            svg,
            r#"<text x="0" y="{:.1}" font-size="10" fill="rgb(85,85,85)">{}</text><text x="{w:.1}" y="{:.1}" font-size="10" fill="rgb(85,85,85)" text-anchor="end">{}</text>"#,
            h - 2.0,
            escape(first),
            h - 2.0,
            escape(last)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn open(title: &str, w: f64, h: f64) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" role="img" aria-label="{0}"><title>{0}</title>"#,
        escape(title)
    )
}

/// A value as people read it: whole numbers without decimals.
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]

    use super::*;

    fn point(label: &str, value: f64) -> Point {
        Point {
            label: label.to_owned(),
            value,
        }
    }

    #[test]
    fn a_bar_chart_has_one_bar_per_point_scaled_to_the_largest() {
        let svg = bars(
            "would fire",
            &[point("d1", 0.0), point("d2", 5.0), point("d3", 10.0)],
            300,
            80,
            "#c33",
        );
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<rect ").count(), 3);
        // 80 px high, 14 for the axis, 12 for the scale: the largest bar is 54 px.
        assert!(
            svg.contains(r##"height="54.0" fill="#c33"><title>d3: 10</title>"##),
            "{svg}"
        );
        assert!(
            svg.contains(r##"height="27.0" fill="#c33"><title>d2: 5</title>"##),
            "{svg}"
        );
        assert!(
            svg.contains(r##"height="0.0" fill="#c33"><title>d1: 0</title>"##),
            "{svg}"
        );
        assert!(svg.contains(">max 10<"));
    }

    #[test]
    fn labels_are_escaped_and_bad_numbers_draw_nothing() {
        let svg = bars(
            "<script>",
            &[point("Agent::\"<b>\"&", f64::NAN), point("x", -3.0)],
            100,
            50,
            "red\"/><script>",
        );
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(!svg.contains("<b>"), "{svg}");
        assert!(
            svg.contains("Agent::&quot;&lt;b&gt;&quot;&amp;: 0"),
            "{svg}"
        );
        assert!(svg.contains(r#"aria-label="&lt;script&gt;""#), "{svg}");
    }

    #[test]
    fn stacked_columns_add_up_and_carry_a_legend() {
        let columns = vec!["v1".to_owned(), "v2".to_owned()];
        let series = vec![
            Series {
                name: "enforce".to_owned(),
                colour: "#282",
                values: vec![1.0, 3.0],
            },
            Series {
                name: "audit".to_owned(),
                colour: "#aa2",
                values: vec![3.0, 1.0],
            },
        ];
        let svg = stacked("rules by mode", &columns, &series, 200, 100);
        // Two legend swatches, four bars.
        assert_eq!(svg.matches("<rect ").count(), 6);
        assert!(svg.contains("<title>v2: 3 enforce</title>"), "{svg}");
        assert!(svg.contains(">enforce</text>") && svg.contains(">audit</text>"));
        // Both columns total 4, the largest: each fills the plot (100 - 16 - 14 - 2 = 68).
        assert!(
            svg.contains(r##"height="51.0" fill="#aa2"><title>v1: 3 audit"##),
            "{svg}"
        );
        assert!(
            svg.contains(r##"height="17.0" fill="#282"><title>v1: 1 enforce"##),
            "{svg}"
        );
    }

    #[test]
    fn marks_are_dashed_lines_at_their_column_with_an_escaped_label() {
        let columns: Vec<String> = (0..4).map(|i| format!("d{i}")).collect();
        let series = vec![Series {
            name: "fired".to_owned(),
            colour: "#f90",
            values: vec![1.0, 2.0, 3.0, 4.0],
        }];
        let marks = [
            Mark {
                column: 2,
                label: "audit → <enforce>".to_owned(),
            },
            Mark {
                column: 9,
                label: "off the chart".to_owned(),
            },
        ];
        let svg = stacked_marked("t", &columns, &series, &marks, 400, 100);
        assert_eq!(svg.matches(r#"class="mark""#).count(), 1, "{svg}");
        // 400 px over 4 columns: column 2 starts at 200.
        assert!(svg.contains(r#"x1="200.0""#), "{svg}");
        assert!(
            svg.contains("<title>audit → &lt;enforce&gt;</title>"),
            "{svg}"
        );
    }

    #[test]
    fn an_empty_chart_is_still_a_drawing() {
        let svg = bars("nothing", &[], 100, 40, "#000");
        assert!(svg.contains("<line ") && svg.ends_with("</svg>"));
        let svg = stacked("nothing", &[], &[], 100, 60);
        assert!(svg.contains("<line ") && svg.ends_with("</svg>"));
    }
}
