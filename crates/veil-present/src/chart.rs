//! Inline SVG charts, written by hand: one `<svg>` per small multiple, classes instead of
//! style attributes (the page's Content-Security-Policy allows no inline style), every
//! text escaped. A chart is a few kilobytes, so 50 teams × two years stay a light page.
//!
//! Judged against `plotters`' SVG backend: plotters writes inline `style`/`fill`
//! attributes (refused by a strict CSP, and no colour-blind theme from one stylesheet),
//! has no notion of a gap that says why, emits no `<title>`/`<desc>` for screen readers,
//! and draws every point as its own element (about five times the bytes). The charts here
//! need three shapes — a band, a line with gaps, markers — which is 150 lines.

use std::fmt::{self, Write};
use std::ops::Range;

/// Markup that is safe to put into a page as is: only this module builds one, and it
/// escapes every text it writes.
#[derive(Debug, Clone, Default)]
pub struct Svg(String);

impl Svg {
    /// The markup's length in bytes (page budgets).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing was drawn.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Svg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl askama::filters::HtmlSafe for Svg {}

/// HTML/XML escaping of a text node or attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What one window of a series shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Mark {
    /// A released value and its 95% interval.
    Shown { value: f64, lo: f64, hi: f64 },
    /// Released, but not shown; the phrase says why ("roster below 5").
    Suppressed(String),
    /// Not released (yet): not sealed, or an analyst has not released it.
    Pending(String),
}

/// One window of a series, with the markers drawn above it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub window: String,
    pub mark: Mark,
    /// A person measured contests this window's number.
    pub contested: bool,
    /// Events refused as `late` for this window after it was sealed: its number misses
    /// them.
    pub late: i64,
}

/// The value axis shared by every chart of one page, so small multiples compare.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    lo: f64,
    hi: f64,
}

impl Scale {
    /// The smallest range holding 0 and every shown interval.
    pub fn covering<'a>(series: impl IntoIterator<Item = &'a [Point]>) -> Scale {
        let (mut lo, mut hi) = (0.0f64, 0.0f64);
        for s in series {
            for p in s {
                if let Mark::Shown {
                    lo: l,
                    hi: h,
                    value,
                } = p.mark
                {
                    lo = lo.min(l).min(value);
                    hi = hi.max(h).max(value);
                }
            }
        }
        if hi - lo < 1e-9 {
            hi = lo + 1.0;
        }
        Scale { lo, hi }
    }

    /// The largest value of the axis.
    pub fn max(&self) -> f64 {
        self.hi
    }
}

// Whole-number coordinates on a 600 × 168 grid: as sharp as one decimal on half of it, in
// fewer bytes.
const W: f64 = 600.0;
const H: f64 = 184.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 152.0;
const LEFT: f64 = 4.0;
const RIGHT: f64 = 596.0;

/// Consecutive points whose marks `together` groups, as index ranges in order.
fn runs(points: &[Point], together: impl Fn(&Mark, &Mark) -> bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=points.len() {
        if i == points.len() || !together(&points[start].mark, &points[i].mark) {
            out.push(start..i);
            start = i;
        }
    }
    out
}

/// The windows not shown, as runs of consecutive windows with the same mark: what one
/// hatched column and one sentence under a chart each stand for.
pub fn gap_runs(points: &[Point]) -> impl Iterator<Item = (Range<usize>, &Mark)> {
    runs(points, |a, b| a == b)
        .into_iter()
        .filter(|r| !matches!(points[r.start].mark, Mark::Shown { .. }))
        .map(|r| (r.clone(), &points[r.start].mark))
}

/// A run's windows as people read them: "2026-W03", or "2026-W03 to 2026-W09".
pub fn span(points: &[Point], r: Range<usize>) -> String {
    if r.len() == 1 {
        points[r.start].window.clone()
    } else {
        format!("{} to {}", points[r.start].window, points[r.end - 1].window)
    }
}

/// One small multiple: a band for the 95% intervals, a line through the values broken at
/// every window not shown, a hatched column for each gap, a triangle over contested
/// windows, the axis' top value and the first and last window as labels. `id` makes the
/// title and description referable; `label` names the chart; `top` is the axis' largest
/// value as people read it ("48 builds").
pub fn series(
    id: &str,
    label: &str,
    summary: &str,
    points: &[Point],
    scale: Scale,
    top: &str,
) -> Svg {
    let n = points.len().max(1) as f64;
    let cw = (RIGHT - LEFT) / n;
    let x = |i: usize| LEFT + (i as f64 + 0.5) * cw;
    let y = |v: f64| {
        let t = ((v - scale.lo) / (scale.hi - scale.lo)).clamp(0.0, 1.0);
        BOTTOM - t * (BOTTOM - TOP)
    };
    let id = escape(id);
    let mut s = String::with_capacity(256 + points.len() * 40);
    let _ = write!(
        s,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-labelledby=\"{id}-t {id}-d\"><title id=\"{id}-t\">{}</title><desc id=\"{id}-d\">{}</desc>",
        escape(label),
        escape(summary)
    );
    // Gaps first, under everything else: one column per run of windows not shown for
    // the same reason.
    for (r, mark) in gap_runs(points) {
        let (class, why) = match mark {
            Mark::Suppressed(why) => ("gap", why),
            Mark::Pending(why) => ("pending", why),
            Mark::Shown { .. } => unreachable!("gap runs hold no shown window"),
        };
        let _ = write!(
            s,
            "<rect class=\"{class}\" x=\"{:.0}\" y=\"{TOP}\" width=\"{:.0}\" height=\"{:.0}\"><title>{}: {}</title></rect>",
            LEFT + r.start as f64 * cw,
            r.len() as f64 * cw,
            BOTTOM - TOP,
            escape(&span(points, r.clone())),
            escape(why)
        );
    }
    // The zero line when zero is inside the axis.
    if scale.lo <= 0.0 && scale.hi >= 0.0 {
        let _ = write!(
            s,
            "<path class=\"axis\" d=\"M{LEFT} {:.0}H{RIGHT}\"/>",
            y(0.0)
        );
    }
    // Runs of consecutive shown windows: one band polygon and one line subpath each.
    let mut band = String::new();
    let mut line = String::new();
    let mut dots = String::new();
    let shown_runs = runs(points, |a, b| {
        matches!(a, Mark::Shown { .. }) == matches!(b, Mark::Shown { .. })
    });
    for r in shown_runs {
        if !matches!(points[r.start].mark, Mark::Shown { .. }) {
            continue;
        }
        let start = r.start;
        let run = &points[r];
        let shown = |p: &Point| match p.mark {
            Mark::Shown { value, lo, hi } => (value, lo, hi),
            _ => unreachable!("runs hold shown points only"),
        };
        if run.len() == 1 {
            let (v, lo, hi) = shown(&run[0]);
            let cx = x(start);
            let _ = write!(
                band,
                "M{:.0} {:.0}H{:.0}V{:.0}H{:.0}Z",
                cx - cw * 0.3,
                y(hi),
                cx + cw * 0.3,
                y(lo),
                cx - cw * 0.3
            );
            let _ = write!(
                dots,
                "<circle class=\"dot\" cx=\"{cx:.0}\" cy=\"{:.0}\" r=\"4\"/>",
                y(v)
            );
            continue;
        }
        for (k, p) in run.iter().enumerate() {
            let (_, _, hi) = shown(p);
            let _ = write!(
                band,
                "{}{:.0} {:.0}",
                if k == 0 { 'M' } else { 'L' },
                x(start + k),
                y(hi)
            );
        }
        for (k, p) in run.iter().enumerate().rev() {
            let (_, lo, _) = shown(p);
            let _ = write!(band, "L{:.0} {:.0}", x(start + k), y(lo));
        }
        band.push('Z');
        for (k, p) in run.iter().enumerate() {
            let (v, _, _) = shown(p);
            let _ = write!(
                line,
                "{}{:.0} {:.0}",
                if k == 0 { 'M' } else { 'L' },
                x(start + k),
                y(v)
            );
        }
    }
    if !band.is_empty() {
        let _ = write!(s, "<path class=\"band\" d=\"{band}\"/>");
    }
    if !line.is_empty() {
        let _ = write!(s, "<path class=\"line\" d=\"{line}\"/>");
    }
    s.push_str(&dots);
    let _ = write!(
        s,
        "<text class=\"tick\" x=\"{LEFT}\" y=\"{:.0}\">{}</text>",
        TOP - 4.0,
        escape(top)
    );
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let _ = write!(
            s,
            "<text class=\"tick\" x=\"{LEFT}\" y=\"{:.0}\">{}</text>",
            H - 6.0,
            escape(&first.window)
        );
        if points.len() > 1 {
            let _ = write!(
                s,
                "<text class=\"tick end\" x=\"{RIGHT}\" y=\"{:.0}\">{}</text>",
                H - 6.0,
                escape(&last.window)
            );
        }
    }
    for (i, p) in points.iter().enumerate() {
        if p.late > 0 {
            let cx = x(i);
            let _ = write!(
                s,
                "<path class=\"late\" d=\"M{:.0} {BOTTOM}L{cx:.0} {:.0}L{:.0} {BOTTOM}Z\"><title>{}: {} late event(s) refused after this window was sealed; its number misses them</title></path>",
                cx - 7.0,
                BOTTOM - 12.0,
                cx + 7.0,
                escape(&p.window),
                p.late
            );
        }
        if p.contested {
            let cx = x(i);
            let _ = write!(
                s,
                "<path class=\"contest\" d=\"M{:.0} 2L{:.0} 2L{cx:.0} 16Z\"><title>{}: contested by a person measured</title></path>",
                cx - 8.0,
                cx + 8.0,
                escape(&p.window)
            );
        }
    }
    s.push_str("</svg>");
    Svg(s)
}

/// A histogram's bins as bars (one release group), with the quantiles as ticks.
pub fn histogram(
    id: &str,
    label: &str,
    bins: &[(String, f64)],
    quantiles: &[(String, usize)],
) -> Svg {
    let n = bins.len().max(1) as f64;
    let cw = (RIGHT - LEFT) / n;
    let max = bins.iter().map(|b| b.1).fold(1.0f64, f64::max);
    let id = escape(id);
    let mut s = String::with_capacity(256 + bins.len() * 80);
    let _ = write!(
        s,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-labelledby=\"{id}-t\"><title id=\"{id}-t\">{}</title>",
        escape(label)
    );
    for (i, (range, count)) in bins.iter().enumerate() {
        let h = (count.max(0.0) / max) * (BOTTOM - TOP);
        let _ = write!(
            s,
            "<rect class=\"bar\" x=\"{:.0}\" y=\"{:.0}\" width=\"{:.0}\" height=\"{h:.0}\"><title>{}: {}</title></rect>",
            LEFT + i as f64 * cw + 1.0,
            BOTTOM - h,
            (cw - 2.0).max(1.0),
            escape(range),
            count
        );
    }
    for (name, bin) in quantiles {
        let cx = LEFT + (*bin as f64 + 0.5) * cw;
        let _ = write!(
            s,
            "<path class=\"quantile\" d=\"M{cx:.0} {TOP}V{BOTTOM}\"><title>{} in this bin</title></path>",
            escape(name)
        );
    }
    let _ = write!(
        s,
        "<path class=\"axis\" d=\"M{LEFT} {BOTTOM}H{RIGHT}\"/></svg>"
    );
    Svg(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(v: f64) -> Mark {
        Mark::Shown {
            value: v,
            lo: v - 2.0,
            hi: v + 2.0,
        }
    }

    #[test]
    fn gaps_break_the_line_and_say_why() {
        let pts = vec![
            Point {
                window: "2026-W01".into(),
                mark: shown(10.0),
                contested: false,
                late: 0,
            },
            Point {
                window: "2026-W02".into(),
                mark: shown(12.0),
                contested: true,
                late: 0,
            },
            Point {
                window: "2026-W03".into(),
                mark: Mark::Suppressed("roster below 5".into()),
                contested: false,
                late: 0,
            },
            Point {
                window: "2026-W04".into(),
                mark: shown(11.0),
                contested: false,
                late: 0,
            },
            Point {
                window: "2026-W05".into(),
                mark: shown(9.0),
                contested: false,
                late: 0,
            },
        ];
        let scale = Scale::covering([pts.as_slice()]);
        let svg = series("t1", "builds: web", "5 weeks", &pts, scale, "14").to_string();
        // Two runs: the line has two subpaths, the band two polygons.
        let line = svg.split("class=\"line\" d=\"").nth(1).unwrap();
        let line = &line[..line.find('"').unwrap()];
        assert_eq!(line.matches('M').count(), 2, "{line}");
        assert!(svg.contains("<title>2026-W03: roster below 5</title>"));

        assert!(svg.contains("class=\"contest\""));
        assert!(!svg.contains("style="), "no inline style under the CSP");
        let all = vec![
            Point {
                window: "a".into(),
                mark: Mark::Suppressed("roster below 5".into()),
                contested: false,
                late: 0,
            },
            Point {
                window: "b".into(),
                mark: Mark::Suppressed("roster below 5".into()),
                contested: false,
                late: 0,
            },
        ];
        let svg = series("t2", "x", "y", &all, Scale::covering([all.as_slice()]), "1").to_string();
        assert_eq!(
            svg.matches("<rect").count(),
            1,
            "one column per run of one reason"
        );
        assert!(svg.contains("<title>a to b: roster below 5</title>"));
    }

    #[test]
    fn text_is_escaped() {
        let pts = vec![Point {
            window: "<script>".into(),
            mark: Mark::Suppressed("\"><img onerror=x>".into()),
            contested: false,
            late: 0,
        }];
        let svg = series(
            "a\"b",
            "<script>alert(1)</script>",
            "x",
            &pts,
            Scale::covering([pts.as_slice()]),
            "<b>",
        )
        .to_string();
        assert!(!svg.contains("<script>"));
        assert!(!svg.contains("<img"));
        assert!(svg.contains("&lt;script&gt;"));
    }

    #[test]
    fn the_axis_holds_zero_and_every_interval() {
        let pts = vec![Point {
            window: "w".into(),
            mark: Mark::Shown {
                value: 3.0,
                lo: -1.0,
                hi: 7.0,
            },
            contested: false,
            late: 0,
        }];
        let s = Scale::covering([pts.as_slice()]);
        assert_eq!((s.lo, s.hi), (-1.0, 7.0));
        let empty: Vec<Point> = Vec::new();
        let s = Scale::covering([empty.as_slice()]);
        assert_eq!((s.lo, s.hi), (0.0, 1.0));
    }
}
