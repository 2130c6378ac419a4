//! Rendering an answer as JSON, CSV or a table. Renderers take only a [`Released`],
//! which only this crate constructs: nothing else can reach a report's output.

use crate::step::{ReleaseGroup, Released};

/// Rows under their header as text columns, each as wide as its widest cell (counted in
/// characters), two spaces apart: the table of every text report (releases, status).
pub fn aligned<S: AsRef<str>>(header: &[S], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.as_ref().chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |r: &mut dyn Iterator<Item = &str>| {
        r.zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
            + "\n"
    };
    let mut out = line(&mut header.iter().map(AsRef::as_ref));
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

/// Output formats of `veil report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// A value in its unit, as a person reads it: durations as durations (`4m 12s`), other
/// units after the number.
pub fn human(x: f64, unit: Option<&str>) -> String {
    let secs = match unit {
        Some("ms") => x / 1000.0,
        Some("s") => x,
        Some("min") => x * 60.0,
        Some("h") => x * 3600.0,
        Some("d") => x * 86_400.0,
        Some(u) => return format!("{} {u}", trim(x)),
        None => return trim(x),
    };
    let s = secs.abs();
    let sign = if secs < 0.0 { "-" } else { "" };
    // Round the whole first, then split: 119.7 s is 2m 00s, never 1m 60s or 1m 00s.
    if s == 0.0 {
        "0".to_owned()
    } else if s < 1.0 {
        format!("{sign}{} ms", (s * 1000.0).round())
    } else if s < 59.95 {
        format!("{sign}{:.1} s", s)
    } else if s < 3599.5 {
        let total = s.round() as u64;
        format!("{sign}{}m {:02}s", total / 60, total % 60)
    } else if s < 86_400.0 * 2.0 - 30.0 {
        let total = (s / 60.0).round() as u64;
        format!("{sign}{}h {:02}m", total / 60, total % 60)
    } else {
        format!("{sign}{:.1} d", s / 86_400.0)
    }
}

fn trim(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{}", (x * 1000.0).round() / 1000.0)
    }
}

fn cell(n: &Option<serde_json::Number>, unit: Option<&str>) -> String {
    n.as_ref()
        .and_then(|x| x.as_f64())
        .map(|x| human(x, unit))
        .unwrap_or_else(|| "-".into())
}

fn raw(n: Option<&serde_json::Number>) -> String {
    n.map(|x| x.to_string()).unwrap_or_default()
}

fn why(g: &ReleaseGroup, k: u32) -> String {
    match (g.reason, g.suppressed) {
        (Some(r), _) => r.phrase(k),
        // Released before reasons were recorded: below the threshold of its day.
        (None, true) => "below the threshold".to_owned(),
        (None, false) => String::new(),
    }
}

/// Renders an answer. JSON is the document itself.
pub fn render(released: &Released, format: Format) -> String {
    let doc = released.document();
    let unit = doc.unit.as_deref();
    let quantiles = doc.kind == "histogram";
    match format {
        Format::Json => released.json(),
        Format::Csv => {
            // Column names carry the unit and the interval's level; the reason column
            // names the threshold a suppressed row missed.
            let u = unit.map(|u| format!("_{u}")).unwrap_or_default();
            let mut header: Vec<String> = vec!["window".into()];
            header.extend(doc.by.iter().cloned());
            if quantiles {
                header.extend([format!("p50{u}"), format!("p90{u}"), format!("p95{u}")]);
            } else {
                header.extend([
                    format!("value{u}"),
                    format!("low_95{u}"),
                    format!("high_95{u}"),
                ]);
            }
            header.extend([
                "active".into(),
                "shown".into(),
                format!("suppressed_because_k_{}", doc.min_group_size),
            ]);
            let mut out = header.join(",") + "\n";
            for g in &doc.groups {
                let mut r = vec![g.window.clone()];
                r.extend(
                    doc.by
                        .iter()
                        .map(|d| g.key.get(d).cloned().unwrap_or_default()),
                );
                if quantiles {
                    for q in ["p50", "p90", "p95"] {
                        r.push(raw(g.quantiles.as_ref().and_then(|m| m.get(q))));
                    }
                } else {
                    r.push(raw(g.value.as_ref()));
                    r.push(raw(g.interval.as_ref().map(|i| &i[0])));
                    r.push(raw(g.interval.as_ref().map(|i| &i[1])));
                }
                r.push(g.active.map(|a| a.to_string()).unwrap_or_default());
                r.push(if g.suppressed { "no" } else { "yes" }.into());
                r.push(why(g, doc.min_group_size));
                out.push_str(&r.iter().map(|x| csv_field(x)).collect::<Vec<_>>().join(","));
                out.push('\n');
            }
            out
        }
        Format::Table => {
            let mut out = format!(
                "{} ({}{})  {} .. {}  release {}\n",
                doc.metric,
                doc.kind,
                unit.map(|u| format!(", in {u}")).unwrap_or_default(),
                doc.from,
                doc.to,
                doc.release_id
            );
            out.push_str(&format!(
                "shown when: {}\nnoise: {} ε={} per window (ε={} over these {} windows), δ={}; charged now ε={}; budget left ε={}\n",
                doc.threshold,
                doc.mechanism,
                doc.epsilon_per_window,
                doc.epsilon,
                doc.windows.len(),
                doc.delta,
                doc.charged,
                doc.budget_left
            ));
            out.push_str(&match doc.kind.as_str() {
                // A bin holds a count of values, not a value: its noise is in counts.
                "histogram" => format!(
                    "interval: each bin's count is within ±{} of its noise-free count 95 times in 100; median, p90 and p95 are read from the noisy bins\n",
                    doc.interval_half_width.round()
                ),
                // A mean divides a noisy sum by a noisy count: its interval is its own.
                "mean" => "interval: 95% — each mean's low..high holds the noise-free mean at least 95 times in 100 (its noisy sum and its noisy count both counted), within the possible range\n".to_owned(),
                _ => format!(
                    "interval: 95% — the noise-free value lies within low..high 95 times in 100 (±{} per value before clamping to the possible range)\n",
                    human(doc.interval_half_width, unit)
                ),
            });
            let mut header: Vec<String> = vec!["window".into()];
            header.extend(doc.by.iter().cloned());
            if quantiles {
                header.extend(["median", "p90", "p95"].map(String::from));
            } else {
                header.extend(["value", "low (95%)", "high (95%)"].map(String::from));
            }
            header.extend(["active", "shown"].map(String::from));
            let mut rows: Vec<Vec<String>> = Vec::new();
            for g in &doc.groups {
                let mut r = vec![g.window.clone()];
                r.extend(
                    doc.by
                        .iter()
                        .map(|d| g.key.get(d).cloned().unwrap_or_default()),
                );
                if quantiles {
                    for q in ["p50", "p90", "p95"] {
                        r.push(cell(
                            &g.quantiles.as_ref().and_then(|m| m.get(q)).cloned(),
                            unit,
                        ));
                    }
                } else {
                    r.push(cell(&g.value, unit));
                    r.push(cell(&g.interval.as_ref().map(|i| i[0].clone()), unit));
                    r.push(cell(&g.interval.as_ref().map(|i| i[1].clone()), unit));
                }
                r.push(
                    g.active
                        .map(|a| format!("~{a}"))
                        .unwrap_or_else(|| "-".into()),
                );
                r.push(if g.suppressed {
                    format!("no: {}", why(g, doc.min_group_size))
                } else {
                    "yes".into()
                });
                rows.push(r);
            }
            out.push_str(&aligned(&header, &rows));
            if !doc.not_released.is_empty() {
                out.push_str(&format!(
                    "not released yet: {} (an analyst's report releases them)\n",
                    doc.not_released.join(", ")
                ));
            }
            if doc.unlisted_groups_suppressed {
                out.push_str("groups not listed were not selected (fewer than k active, or too few to pass the noisy selection)\n");
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn durations_read_as_durations() {
        assert_eq!(human(81_234.0, Some("ms")), "1m 21s");
        assert_eq!(human(500.0, Some("ms")), "500 ms");
        assert_eq!(human(5400.0, Some("s")), "1h 30m");
        assert_eq!(human(12.5, Some("h")), "12h 30m");
        assert_eq!(human(3.0, Some("bytes")), "3 bytes");
        assert_eq!(human(7.0, None), "7");
        // Rounding carries into the next unit instead of printing 60.
        assert_eq!(human(119.7, Some("s")), "2m 00s");
        assert_eq!(human(59.97, Some("s")), "1m 00s");
        assert_eq!(human(3599.7, Some("s")), "1h 00m");
        assert_eq!(human(7199.0 * 60.0, Some("s")), "5.0 d");
        assert_eq!(human(2.0 * 86_400.0 - 10.0, Some("s")), "2.0 d");
        assert_eq!(human(0.0, Some("h")), "0");
    }
}
