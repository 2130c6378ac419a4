//! Rendering a stored release as JSON, CSV or a table. Renderers take only a
//! [`Released`], which only this crate constructs: nothing else can reach a report's
//! output.

use crate::step::{ReleaseDoc, Released};

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

/// Renders a stored release. JSON is the stored document with one field set for the
/// reader: `budget_left` is the reader's own, now (spec §6), not the first releaser's.
pub fn render(released: &Released, format: Format) -> String {
    let mut doc: ReleaseDoc = match serde_json::from_str(&released.record().document) {
        Ok(d) => d,
        Err(_) => return String::from("error: the stored release document is unreadable\n"),
    };
    doc.budget_left = (released.budget_left() * 1e6).round() / 1e6;
    if format == Format::Json {
        return serde_json::to_string(&doc).expect("release documents serialize");
    }
    let mut header: Vec<String> = vec!["window".into()];
    header.extend(doc.by.iter().cloned());
    header.extend(["value", "low", "high", "suppressed"].map(String::from));
    let mut rows: Vec<Vec<String>> = Vec::new();
    for g in &doc.groups {
        let mut r = vec![g.window.clone()];
        r.extend(
            doc.by
                .iter()
                .map(|d| g.key.get(d).cloned().unwrap_or_default()),
        );
        let s = |n: &Option<serde_json::Number>| {
            n.as_ref()
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".into())
        };
        r.push(s(&g.value));
        r.push(s(&g.interval.as_ref().map(|i| i[0].clone())));
        r.push(s(&g.interval.as_ref().map(|i| i[1].clone())));
        r.push(if g.suppressed {
            "yes".into()
        } else {
            "no".into()
        });
        rows.push(r);
    }
    let mut out = String::new();
    match format {
        Format::Csv => {
            out.push_str(&header.join(","));
            out.push('\n');
            for r in rows {
                out.push_str(&r.iter().map(|x| csv_field(x)).collect::<Vec<_>>().join(","));
                out.push('\n');
            }
        }
        _ => {
            out.push_str(&format!(
                "release {}  metric {} ({})  {} .. {}  ε={} δ={:e} {}  budget left {}  k={}\n",
                doc.release_id,
                doc.metric,
                doc.kind,
                doc.from,
                doc.to,
                doc.epsilon,
                doc.delta,
                doc.mechanism,
                doc.budget_left,
                doc.min_group_size
            ));
            out.push_str(&format!("values carry noise; 95% of the time the true value lies within ±{} of the noise-free one\n", doc.interval_half_width));
            let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
            for r in &rows {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |r: &[String]| {
                r.iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_owned()
                    + "\n"
            };
            out.push_str(&line(&header));
            for r in &rows {
                out.push_str(&line(r));
            }
            if doc.unlisted_groups_suppressed {
                out.push_str("groups not listed were suppressed (fewer than k contributors or not selected)\n");
            }
        }
    }
    out
}
