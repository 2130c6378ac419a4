//! Contests (spec §5): a person measured (role `member`) attaches a short note to a
//! released metric window — "this week's number is wrong because…" — which every later
//! report shows next to that window, and an analyst can answer. Notes are scanned like
//! any string (personal data refused) and kept only in the audit chain, from which the
//! state is folded (as grants are). Reports and lists never name who filed a note: a
//! complaint must not single its author out.

use crate::{Actor, GovernError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use veil_policy::Policy;
use veil_store::{audit::entry_hash, Store};

/// Audit action of a filed contest.
pub const FILE: &str = "contest";
/// Audit action of an answer.
pub const ANSWER: &str = "contest_answer";
/// Audit action of a refused contest or answer.
pub const DENIED: &str = "contest_denied";

const NOTE_MAX: usize = 500;

/// The most contests one principal may have open (unanswered) at once: enough for every
/// window a person doubts, too few to bury everyone's posture page under one member's
/// notes.
pub const OPEN_PER_PRINCIPAL: usize = 10;

/// The most contests one principal may file on one window of one metric, answered or
/// not: every report shows them beside that window.
pub const PER_WINDOW: usize = 3;

/// One answer to a contest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// The analyst who answered (answers speak for the team that publishes the numbers).
    pub by: String,
    pub note: String,
    pub at: i64,
}

/// A contest as reports and lists show it: no author.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contest {
    pub id: String,
    pub metric: String,
    /// The window label as reports print it (`2026-W45`, `2026-11-20`, `2026-11`).
    pub window: String,
    pub note: String,
    pub filed_at: i64,
    pub answers: Vec<Answer>,
}

impl Contest {
    /// Open until an analyst answers it.
    pub fn is_open(&self) -> bool {
        self.answers.is_empty()
    }
}

#[derive(Deserialize)]
struct Detail {
    contest: String,
    metric: Option<String>,
    window: Option<String>,
    note: String,
    at_unix: i64,
}

/// Every contest the chain records (intact entries only), oldest first.
pub fn list(store: &dyn Store) -> Result<Vec<Contest>> {
    let mut by_id: BTreeMap<String, Contest> = BTreeMap::new();
    let mut order = Vec::new();
    for e in store.audit_entries(&[FILE, ANSWER])? {
        if entry_hash(&e.prev, e.seq, &e.at, &e.actor, &e.action, &e.detail) != e.hash {
            continue;
        }
        let Ok(d) = serde_json::from_str::<Detail>(&e.detail) else {
            continue;
        };
        match (e.action.as_str(), d.metric, d.window) {
            (FILE, Some(metric), Some(window)) if !by_id.contains_key(&d.contest) => {
                order.push(d.contest.clone());
                by_id.insert(
                    d.contest.clone(),
                    Contest {
                        id: d.contest,
                        metric,
                        window,
                        note: d.note,
                        filed_at: d.at_unix,
                        answers: Vec::new(),
                    },
                );
            }
            (ANSWER, _, _) => {
                if let Some(c) = by_id.get_mut(&d.contest) {
                    c.answers.push(Answer {
                        by: e.actor.clone(),
                        note: d.note,
                        at: d.at_unix,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect())
}

/// Of the contests `actor` filed (intact entries only): how many no analyst has answered
/// yet, and how many, answered or not, are on `metric`'s `window`.
fn filed_by(store: &dyn Store, actor: &str, metric: &str, window: &str) -> Result<(usize, usize)> {
    let mut mine = std::collections::BTreeSet::new();
    let mut answered = std::collections::BTreeSet::new();
    let mut here = 0;
    for e in store.audit_entries(&[FILE, ANSWER])? {
        if entry_hash(&e.prev, e.seq, &e.at, &e.actor, &e.action, &e.detail) != e.hash {
            continue;
        }
        let Ok(d) = serde_json::from_str::<Detail>(&e.detail) else {
            continue;
        };
        match e.action.as_str() {
            FILE if e.actor == actor => {
                if d.metric.as_deref() == Some(metric) && d.window.as_deref() == Some(window) {
                    here += 1;
                }
                mine.insert(d.contest);
            }
            ANSWER => {
                answered.insert(d.contest);
            }
            _ => {}
        }
    }
    Ok((mine.difference(&answered).count(), here))
}

/// The contests of one metric, by window label: what a report shows beside its rows.
pub fn for_metric(store: &dyn Store, metric: &str) -> Result<BTreeMap<String, Vec<Contest>>> {
    let mut out: BTreeMap<String, Vec<Contest>> = BTreeMap::new();
    for c in list(store)?.into_iter().filter(|c| c.metric == metric) {
        out.entry(c.window.clone()).or_default().push(c);
    }
    Ok(out)
}

fn deny(
    store: &mut dyn Store,
    who: &Actor,
    code: &'static str,
    message: String,
    now: i64,
) -> GovernError {
    let detail = serde_json::json!({"reason": code, "at_unix": now});
    if let Err(e) = store.audit(who.name, DENIED, &detail, now) {
        return e.into();
    }
    GovernError::Refused { code, message }
}

/// Checks a note: 1 to 500 characters, no personal data (it is shown in every report).
fn check_note(store: &mut dyn Store, who: &Actor, note: &str, now: i64) -> Result<String> {
    let note = note.trim();
    if note.is_empty() || note.chars().count() > NOTE_MAX {
        return Err(deny(
            store,
            who,
            "bad_note",
            format!("a note has 1 to {NOTE_MAX} characters"),
            now,
        ));
    }
    if let Some(kind) = veil_pipeline::pii::first(note) {
        return Err(deny(
            store,
            who,
            "pii_detected",
            format!(
                "the note looks like it contains {}; it is shown in every report, so write it without personal data",
                kind.describe()
            ),
            now,
        ));
    }
    Ok(note.to_owned())
}

/// `veil contest METRIC --window W --note TEXT`: files a note on a window of a metric.
/// Refused (and audited, without the note) for an unknown metric, a window label that
/// is not one of the metric's windows, a note with personal data, or a principal who
/// already has [`OPEN_PER_PRINCIPAL`] contests open or [`PER_WINDOW`] on this window.
pub fn file(
    store: &mut dyn Store,
    policy: &Policy,
    who: &Actor,
    metric: &str,
    window: &str,
    note: &str,
    now: i64,
) -> Result<Contest> {
    let Some((_, m)) = policy.metric(metric) else {
        return Err(deny(
            store,
            who,
            "unknown_metric",
            "the policy declares no such metric".into(),
            now,
        ));
    };
    let start = veil_pipeline::window::parse_label(window)
        .filter(|s| veil_pipeline::window::label(m.window, *s) == window);
    let Some(start) = start else {
        return Err(deny(
            store,
            who,
            "bad_window",
            format!(
                "{} is released per {:?}; name a window as reports print it (e.g. {})",
                m.name,
                m.window,
                veil_pipeline::window::label(m.window, now)
            ),
            now,
        ));
    };
    if start > now {
        return Err(deny(
            store,
            who,
            "bad_window",
            "that window has not started yet".into(),
            now,
        ));
    }
    let (open, here) = filed_by(store, who.name, &m.name, window)?;
    if here >= PER_WINDOW {
        return Err(deny(
            store,
            who,
            "too_many_on_window",
            format!("you have contested this window {PER_WINDOW} times already; one note says it"),
            now,
        ));
    }
    if open >= OPEN_PER_PRINCIPAL {
        return Err(deny(
            store,
            who,
            "too_many_open",
            format!(
                "you have {OPEN_PER_PRINCIPAL} contests open; file another once an analyst has answered one"
            ),
            now,
        ));
    }
    let note = check_note(store, who, note, now)?;
    let id = format!("c-{}", hex::encode(rand::random::<[u8; 8]>()));
    let detail = serde_json::json!({"contest": id, "metric": m.name, "window": window, "note": note, "at_unix": now});
    store.audit(who.name, FILE, &detail, now)?;
    Ok(Contest {
        id,
        metric: m.name.clone(),
        window: window.to_owned(),
        note,
        filed_at: now,
        answers: Vec::new(),
    })
}

/// An analyst's answer to a contest (scanned like the note).
pub fn answer(
    store: &mut dyn Store,
    who: &Actor,
    id: &str,
    note: &str,
    now: i64,
) -> Result<Contest> {
    let Some(mut c) = list(store)?.into_iter().find(|c| c.id == id) else {
        return Err(deny(
            store,
            who,
            "unknown_contest",
            "there is no contest with this id".into(),
            now,
        ));
    };
    let note = check_note(store, who, note, now)?;
    let detail = serde_json::json!({"contest": c.id, "note": note, "at_unix": now});
    store.audit(who.name, ANSWER, &detail, now)?;
    c.answers.push(Answer {
        by: who.name.to_owned(),
        note,
        at: now,
    });
    Ok(c)
}

/// The format of a rendered report, for [`annotate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
}

/// A rendered report with the contests of its windows beside them: in a table, lines
/// after it; in JSON, a `contests` array; in CSV, a `contest` column on every row of a
/// contested window. Unchanged when no window of it is contested.
pub fn annotate(
    text: &str,
    format: ReportFormat,
    contests: &BTreeMap<String, Vec<Contest>>,
) -> String {
    let windows_in = |w: &str| contests.get(w).filter(|v| !v.is_empty());
    let line_of = |c: &Contest| {
        let mut s = format!("contested: \"{}\"", c.note);
        for a in &c.answers {
            s.push_str(&format!(" — answered: \"{}\"", a.note));
        }
        s
    };
    match format {
        ReportFormat::Json => {
            let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text) else {
                return text.to_owned();
            };
            let mut shown = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            for g in v["groups"].as_array().into_iter().flatten() {
                if let Some(w) = g["window"].as_str() {
                    if seen.insert(w.to_owned()) {
                        shown.extend(windows_in(w).into_iter().flatten().cloned());
                    }
                }
            }
            if shown.is_empty() {
                return text.to_owned();
            }
            v["contests"] = serde_json::to_value(&shown).expect("contests serialize");
            serde_json::to_string(&v).expect("a report serializes")
        }
        ReportFormat::Csv => {
            let mut lines = text.lines();
            let Some(header) = lines.next() else {
                return text.to_owned();
            };
            let rows: Vec<&str> = lines.collect();
            let any = rows
                .iter()
                .any(|r| windows_in(r.split(',').next().unwrap_or("")).is_some());
            if !any {
                return text.to_owned();
            }
            let mut out = format!("{header},contest\n");
            for r in rows {
                let w = r.split(',').next().unwrap_or("");
                let note = windows_in(w)
                    .map(|cs| cs.iter().map(line_of).collect::<Vec<_>>().join("; "))
                    .unwrap_or_default();
                out.push_str(&format!("{r},\"{}\"\n", note.replace('"', "\"\"")));
            }
            out
        }
        ReportFormat::Table => {
            let mut extra = String::new();
            for (w, cs) in contests {
                if !text.contains(w.as_str()) {
                    continue;
                }
                for c in cs {
                    extra.push_str(&format!("  {w} {}\n", line_of(c)));
                }
            }
            if extra.is_empty() {
                return text.to_owned();
            }
            let mut out = text.to_owned();
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str("contested windows (notes from the people measured):\n");
            out.push_str(&extra);
            out
        }
    }
}
