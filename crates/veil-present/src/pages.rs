//! Page models and their templates. Each `pub fn` renders one page to HTML; the gateway
//! decides who may see it (through `veil-access`, as for the API) and hands in the facts.

use crate::chart::{self, Mark, Point, Scale, Svg};
use askama::Template;
use std::collections::{BTreeMap, BTreeSet};
use veil_access::Action;
use veil_policy::{FieldClass, MetricKind, Policy, Transform, Window};
use veil_release::{ReleaseDoc, ReleaseGroup};

/// Every page of the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    TeamHealth,
    Usage,
    Posture,
    Audit,
    Grants,
    Subjects,
    About,
}

impl Page {
    /// In navigation order.
    pub const ALL: [Page; 7] = [
        Page::TeamHealth,
        Page::Usage,
        Page::Posture,
        Page::Audit,
        Page::Grants,
        Page::Subjects,
        Page::About,
    ];

    /// The page's path.
    pub fn href(self) -> &'static str {
        match self {
            Page::TeamHealth => "/",
            Page::Usage => "/usage",
            Page::Posture => "/posture",
            Page::Audit => "/audit",
            Page::Grants => "/grants",
            Page::Subjects => "/subjects",
            Page::About => "/about",
        }
    }

    /// The page's name in the navigation.
    pub fn label(self) -> &'static str {
        match self {
            Page::TeamHealth => "Team health",
            Page::Usage => "Product usage",
            Page::Posture => "Privacy posture",
            Page::Audit => "Audit log",
            Page::Grants => "Grants",
            Page::Subjects => "Subject requests",
            Page::About => "What is collected",
        }
    }

    /// The action a principal needs to open the page: the API's own authorization.
    /// `None`: any signed-in principal.
    pub fn action(self) -> Option<Action> {
        match self {
            Page::TeamHealth | Page::Usage => Some(Action::ReadRelease),
            Page::Posture => Some(Action::ReadStatus),
            Page::Audit => Some(Action::ReadAudit),
            Page::Grants => Some(Action::ListGrants),
            Page::Subjects => Some(Action::SubjectRequest),
            Page::About => None,
        }
    }
}

/// The signed-in principal as pages show it.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub name: String,
    pub roles: Vec<String>,
    /// The session's CSRF token, put into every form.
    pub csrf: String,
    /// The pages this principal may open.
    pub pages: Vec<Page>,
}

struct Nav {
    href: &'static str,
    label: &'static str,
    current: bool,
}

/// What every page's frame shows: title, navigation, who is signed in, sign-out.
struct Layout {
    title: String,
    nav: Vec<Nav>,
    who: Option<String>,
    csrf: String,
}

impl Layout {
    fn new(title: impl Into<String>, current: Option<Page>, viewer: Option<&Viewer>) -> Layout {
        let pages: Vec<Page> = match viewer {
            Some(v) => v.pages.clone(),
            None => vec![Page::About],
        };
        Layout {
            title: title.into(),
            nav: pages
                .into_iter()
                .map(|p| Nav {
                    href: p.href(),
                    label: p.label(),
                    current: Some(p) == current,
                })
                .collect(),
            who: viewer.map(|v| format!("{} ({})", v.name, v.roles.join(", "))),
            csrf: viewer.map(|v| v.csrf.clone()).unwrap_or_default(),
        }
    }
}

fn render(t: &impl Template) -> String {
    t.render().expect("templates render into a String")
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SigninPage<'a> {
    layout: Layout,
    error: Option<&'a str>,
    csrf: &'a str,
}

/// The sign-in form. `csrf` binds the form to the browser's pre-session cookie.
pub fn signin(error: Option<&str>, csrf: &str, about_public: bool) -> String {
    let mut layout = Layout::new("Sign in", None, None);
    if !about_public {
        layout.nav.clear();
    }
    render(&SigninPage {
        layout,
        error,
        csrf,
    })
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    layout: Layout,
    text: &'a str,
    back: &'a str,
}

/// A short page that says what happened (a refusal, a done action) and links back.
pub fn message(viewer: Option<&Viewer>, title: &str, text: &str, back: &str) -> String {
    render(&MessagePage {
        layout: Layout::new(title, None, viewer),
        text,
        back,
    })
}

/// What releasing the windows not released yet would cost (`--dry-run`).
#[derive(Debug, Clone)]
pub struct Cost {
    /// The range planned (dates, `to` exclusive): the confirmation pins it.
    pub from: String,
    pub to: String,
    pub windows: Vec<String>,
    pub epsilon_per_window: f64,
    pub epsilon: f64,
    /// Per budget period: (period start, ε charged, ε left after).
    pub periods: Vec<(String, f64, f64)>,
    /// Whether every period can pay.
    pub affordable: bool,
}

/// Everything a release page (team health, product usage) is built from.
pub struct Releases<'a> {
    pub policy: &'a Policy,
    pub metric: &'a str,
    /// The stored release of the range, when any window of it was released.
    pub doc: Option<&'a ReleaseDoc>,
    /// Windows of the range not released (yet).
    pub pending: Vec<String>,
    /// Windows a person measured contests.
    pub contested: BTreeSet<String>,
    /// Per window: events refused as `late` after it was sealed.
    pub late: BTreeMap<String, i64>,
    /// For an analyst: what releasing the pending windows costs.
    pub cost: Option<Cost>,
    /// A sentence about the range (nothing sealed yet, nothing released yet, …).
    pub notice: Option<String>,
    pub weeks: u32,
    pub as_table: bool,
    /// In the table view, which page of [`TABLE_GROUPS`] groups (from 0).
    pub groups_page: usize,
    /// Whether the viewer may contest a released window.
    pub may_contest: bool,
}

/// Groups per page in the table view: two years of 20 teams is a long page already.
pub const TABLE_GROUPS: usize = 20;

/// Groups per page in the chart view: 60 small multiples stay under the page budget.
pub const CHART_GROUPS: usize = 60;

/// The ranges offered, in weeks.
pub const RANGES: [u32; 5] = [4, 12, 26, 52, 104];

struct Choice {
    value: String,
    label: String,
    selected: bool,
}

struct Row {
    window: String,
    value: String,
    interval: String,
    note: String,
}

struct Multiple {
    label: String,
    /// The newest shown value, its window and interval, in words.
    latest: Option<String>,
    svg: Svg,
    /// Visible text for the windows not shown, grouped by reason.
    gaps: Vec<String>,
    rows: Vec<Row>,
    histogram: Option<Svg>,
}

struct MetricText {
    name: String,
    unit: String,
    measures: String,
    does_not_mean: String,
    misread_when: String,
    window: String,
}

#[derive(Template)]
#[template(path = "releases.html")]
struct ReleasesPage {
    layout: Layout,
    action: &'static str,
    metrics: Vec<Choice>,
    ranges: Vec<Choice>,
    metric: MetricText,
    header: Vec<String>,
    multiples: Vec<Multiple>,
    notice: Option<String>,
    cost: Option<Cost>,
    csrf: String,
    weeks: u32,
    as_table: bool,
    table_href: String,
    chart_href: String,
    /// Pages of groups in the table view: (label, link, current).
    pager: Vec<(String, String, bool)>,
    contest_windows: Vec<String>,
    cross_team: bool,
}

/// Whether a metric is a team metric: grouped by one field whose values are the team map.
pub fn is_team_metric(policy: &Policy, metric: &str) -> bool {
    policy
        .metric(metric)
        .is_some_and(|(c, m)| m.by.len() == 1 && c.fields[m.by[0]].from_team_map())
}

/// The metrics a release page offers, in order: team health takes the team metrics;
/// product usage every other one, the product collections' (those with no team field)
/// first, so it opens on feature usage rather than on an organization-wide build count.
pub fn page_metrics(policy: &Policy, team: bool) -> Vec<String> {
    let mut out: Vec<(bool, String)> = policy
        .metrics()
        .filter(|(_, m)| is_team_metric(policy, &m.name) == team)
        .map(|(c, m)| (c.fields.iter().any(|f| f.from_team_map()), m.name.clone()))
        .collect();
    // Stable: policy order within each kind.
    out.sort_by_key(|(has_team, _)| *has_team);
    out.into_iter().map(|(_, m)| m).collect()
}

fn num(n: &serde_json::Number) -> f64 {
    n.as_f64().unwrap_or(0.0)
}

/// The point of one group in one window.
fn mark(g: &ReleaseGroup, k: u32, hist: bool) -> Mark {
    if g.suppressed {
        return Mark::Suppressed(
            g.reason
                .map(|r| r.phrase(k))
                .unwrap_or_else(|| "not shown".into()),
        );
    }
    if hist {
        // The median as the line; bins carry the distribution.
        return match g.quantiles.as_ref().and_then(|q| q.get("p50")) {
            Some(p) => Mark::Shown {
                value: num(p),
                lo: num(p),
                hi: num(p),
            },
            None => Mark::Suppressed("too few values".into()),
        };
    }
    match (&g.value, &g.interval) {
        (Some(v), Some([lo, hi])) => Mark::Shown {
            value: num(v),
            lo: num(lo),
            hi: num(hi),
        },
        (Some(v), None) => Mark::Shown {
            value: num(v),
            lo: num(v),
            hi: num(v),
        },
        _ => Mark::Suppressed("not shown".into()),
    }
}

fn group_label(by: &[String], key: &BTreeMap<String, String>) -> String {
    by.iter()
        .map(|d| key.get(d).map(String::as_str).unwrap_or("?"))
        .collect::<Vec<_>>()
        .join(" · ")
}

fn page_for(team: bool) -> Page {
    if team {
        Page::TeamHealth
    } else {
        Page::Usage
    }
}

/// The team-health page (`team` = true) or the product-usage page: one small multiple per
/// group — teams in alphabetical order, never ranked by a value — with a table twin.
pub fn releases(viewer: &Viewer, r: &Releases, team: bool) -> String {
    let page = page_for(team);
    let (coll, m) = match r.policy.metric(r.metric) {
        Some(x) => x,
        None => {
            return message(
                Some(viewer),
                "Unknown metric",
                "No metric of that name is declared.",
                page.href(),
            )
        }
    };
    // The release's unit, or before any release the measured field's.
    let unit = r.doc.and_then(|d| d.unit.clone()).or_else(|| {
        m.field
            .and_then(|f| coll.fields[f].unit())
            .map(str::to_owned)
    });
    let by: Vec<String> =
        m.by.iter()
            .map(|&i| coll.fields[i].name().to_owned())
            .collect();
    let hist = m.kind == MetricKind::Histogram;
    // Windows: released ones and pending ones, in time order (labels sort as times).
    let mut windows: BTreeSet<String> = r.pending.iter().cloned().collect();
    if let Some(d) = r.doc {
        windows.extend(d.windows.iter().cloned());
    }
    let windows: Vec<String> = windows.into_iter().collect();
    // Groups: a team metric lists every team of the map (alphabetical, `unassigned`
    // last); others the groups the release lists.
    let mut groups: Vec<BTreeMap<String, String>> = Vec::new();
    let mut seen = BTreeSet::new();
    if team {
        if let Some(tm) = r.policy.team_map() {
            let mut names: Vec<String> = tm.teams().iter().map(|t| t.name().to_owned()).collect();
            names.sort();
            names.push("unassigned".into());
            for n in names {
                groups.push([(by[0].clone(), n)].into_iter().collect());
            }
        }
    }
    let mut by_group: BTreeMap<String, BTreeMap<&str, &ReleaseGroup>> = BTreeMap::new();
    if let Some(d) = r.doc {
        let mut extra = Vec::new();
        for g in &d.groups {
            let label = group_label(&by, &g.key);
            by_group
                .entry(label.clone())
                .or_default()
                .insert(g.window.as_str(), g);
            if seen.insert(label) && !groups.iter().any(|k| k == &g.key) {
                extra.push(g.key.clone());
            }
        }
        extra.sort();
        groups.extend(extra);
    }
    let k = r.doc.map(|d| d.min_group_size).unwrap_or(m.min_group_size);
    let series: Vec<(String, Vec<Point>)> = groups
        .iter()
        .map(|key| {
            let label = group_label(&by, key);
            let found = by_group.get(&label);
            let pts = windows
                .iter()
                .map(|w| {
                    let mark = match found.and_then(|f| f.get(w.as_str())) {
                        Some(g) => mark(g, k, hist),
                        None if r.pending.contains(w) => Mark::Pending("not released yet".into()),
                        None => Mark::Suppressed(
                            if r.doc.is_some_and(|d| d.unlisted_groups_suppressed) {
                                "not selected (too few active)".into()
                            } else {
                                "not listed".into()
                            },
                        ),
                    };
                    Point {
                        window: w.clone(),
                        mark,
                        contested: r.contested.contains(w),
                        late: r.late.get(w).copied().unwrap_or(0),
                    }
                })
                .collect();
            (label, pts)
        })
        .collect();
    let scale = Scale::covering(series.iter().map(|(_, p)| p.as_slice()));
    let fmt = |x: f64| veil_release::human(x, unit.as_deref());
    // Both views page through the groups (the table by fewer); one axis for all pages.
    let per_page = if r.as_table {
        TABLE_GROUPS
    } else {
        CHART_GROUPS
    };
    let pages = series.len().div_ceil(per_page).max(1);
    let groups_page = r.groups_page.min(pages - 1);
    let series: Vec<(String, Vec<Point>)> = series
        .into_iter()
        .skip(groups_page * per_page)
        .take(per_page)
        .collect();
    let multiples = series
        .iter()
        .enumerate()
        .map(|(i, (label, pts))| {
            let shown = pts
                .iter()
                .filter(|p| matches!(p.mark, Mark::Shown { .. }))
                .count();
            let summary = format!(
                "{} per {} for {label}: {shown} of {} windows shown; axis from 0 to {}",
                m.name,
                window_word(m.window),
                pts.len(),
                fmt(scale.max())
            );
            let gaps = gap_sentences(pts);
            let rows = pts
                .iter()
                .map(|p| {
                    let (value, interval, mut note) = match &p.mark {
                        Mark::Shown { value, lo, hi } => (
                            fmt(*value),
                            if hist {
                                String::new()
                            } else {
                                format!("{} – {}", fmt(*lo), fmt(*hi))
                            },
                            String::new(),
                        ),
                        Mark::Suppressed(w) => {
                            (String::new(), String::new(), format!("not shown: {w}"))
                        }
                        Mark::Pending(w) => (String::new(), String::new(), w.clone()),
                    };
                    if p.contested {
                        if !note.is_empty() {
                            note.push_str("; ");
                        }
                        note.push_str("contested");
                    }
                    if p.late > 0 {
                        if !note.is_empty() {
                            note.push_str("; ");
                        }
                        note.push_str(&format!("misses {} late event(s)", p.late));
                    }
                    Row {
                        window: p.window.clone(),
                        value,
                        interval,
                        note,
                    }
                })
                .collect();
            let histogram = (hist && !r.as_table)
                .then(|| {
                    latest_histogram(
                        &format!("h{i}"),
                        label,
                        by_group.get(label),
                        &windows,
                        unit.as_deref(),
                    )
                })
                .flatten();
            Multiple {
                svg: if r.as_table {
                    Svg::default()
                } else {
                    chart::series(
                        &format!("c{i}"),
                        &format!("{}: {label}", m.name),
                        &summary,
                        pts,
                        scale,
                        &fmt(scale.max()),
                    )
                },
                latest: pts.iter().rev().find_map(|p| match p.mark {
                    Mark::Shown { value, lo, hi } if hist => {
                        let _ = (lo, hi);
                        Some(format!("{}: median {}", p.window, fmt(value)))
                    }
                    Mark::Shown { value, lo, hi } => Some(format!(
                        "{}: {} (95% interval {} – {})",
                        p.window,
                        fmt(value),
                        fmt(lo),
                        fmt(hi)
                    )),
                    _ => None,
                }),
                label: label.clone(),
                gaps,
                rows,
                histogram,
            }
        })
        .collect();
    let mut header = Vec::new();
    if let Some(d) = r.doc {
        header.push(d.threshold.clone());
        header.push(format!(
            "Each shown value carries its {:.0}% interval (the band); noise: {}, ε {} per window, δ {}.",
            d.interval_level * 100.0,
            d.mechanism,
            trim(d.epsilon_per_window),
            d.delta
        ));
        if d.charged > 0.0 {
            header.push(format!(
                "This view charged ε {}; ε {} left in the newest window's budget period.",
                trim(d.charged),
                trim(d.budget_left)
            ));
        } else {
            header.push(format!("Every window shown was released before: viewing it spends nothing (ε {} left in the newest window's budget period).", trim(d.budget_left)));
        }
    }
    let metrics = page_metrics(r.policy, team)
        .into_iter()
        .map(|name| Choice {
            label: name.replace('_', " "),
            selected: name == m.name,
            value: name,
        })
        .collect();
    let ranges = RANGES
        .iter()
        .map(|w| Choice {
            value: w.to_string(),
            label: format!("{w} weeks"),
            selected: *w == r.weeks,
        })
        .collect();
    let q = |table: bool| {
        format!(
            "{}?metric={}&weeks={}{}",
            page.href(),
            m.name,
            r.weeks,
            if table { "&view=table" } else { "" }
        )
    };
    let contest_windows = if r.may_contest {
        r.doc.map(|d| d.windows.clone()).unwrap_or_default()
    } else {
        Vec::new()
    };
    render(&ReleasesPage {
        layout: Layout::new(
            format!("{} — {}", page.label(), m.name),
            Some(page),
            Some(viewer),
        ),
        action: page.href(),
        metrics,
        ranges,
        metric: MetricText {
            name: m.name.clone(),
            unit: unit
                .clone()
                .map(|u| format!("in {u}"))
                .unwrap_or_else(|| match m.kind {
                    MetricKind::Count | MetricKind::Distinct => "a count".into(),
                    _ => "no unit".into(),
                }),
            measures: m.explain.measures.clone(),
            does_not_mean: m.explain.does_not_mean.clone(),
            misread_when: m.explain.misread_when.clone(),
            window: window_word(m.window).to_owned(),
        },
        header,
        multiples,
        notice: r.notice.clone(),
        cost: r.cost.clone(),
        csrf: viewer.csrf.clone(),
        weeks: r.weeks,
        as_table: r.as_table,
        pager: if pages > 1 {
            (0..pages)
                .map(|i| {
                    (
                        format!(
                            "groups {}–{}",
                            i * per_page + 1,
                            ((i + 1) * per_page).min(groups.len())
                        ),
                        format!("{}&page={i}", q(r.as_table)),
                        i == groups_page,
                    )
                })
                .collect()
        } else {
            Vec::new()
        },
        table_href: q(true),
        chart_href: q(false),
        contest_windows,
        cross_team: team,
    })
}

/// The windows not shown, by reason, with runs of consecutive windows as ranges:
/// "Not shown in 2026-W03 to 2026-W09, 2026-W12: fewer than 5 active."
fn gap_sentences(pts: &[Point]) -> Vec<String> {
    let mut why: BTreeMap<&str, (usize, Vec<String>)> = BTreeMap::new();
    for (r, mark) in chart::gap_runs(pts) {
        let w = match mark {
            Mark::Suppressed(w) | Mark::Pending(w) => w.as_str(),
            Mark::Shown { .. } => continue,
        };
        let e = why.entry(w).or_default();
        e.0 += r.len();
        e.1.push(chart::span(pts, r));
    }
    why.into_iter()
        .map(|(w, (n, spans))| {
            if n == pts.len() {
                format!("Not shown in any window: {w}.")
            } else {
                format!("Not shown in {}: {w}.", spans.join(", "))
            }
        })
        .collect()
}

/// The newest shown histogram of a group, with its quantiles marked.
fn latest_histogram(
    id: &str,
    label: &str,
    found: Option<&BTreeMap<&str, &ReleaseGroup>>,
    windows: &[String],
    unit: Option<&str>,
) -> Option<Svg> {
    let found = found?;
    let g = windows
        .iter()
        .rev()
        .filter_map(|w| found.get(w.as_str()))
        .find(|g| !g.suppressed && g.bins.is_some())?;
    let bins = g.bins.as_ref()?;
    let labelled: Vec<(String, f64)> = bins
        .iter()
        .map(|b| {
            (
                format!(
                    "{} to {}",
                    veil_release::human(b.lo, unit),
                    veil_release::human(b.hi, unit)
                ),
                b.count as f64,
            )
        })
        .collect();
    let quantiles: Vec<(String, usize)> = g
        .quantiles
        .iter()
        .flatten()
        .map(|(name, v)| {
            let v = num(v);
            let bin = bins
                .iter()
                .position(|b| v >= b.lo && v < b.hi)
                .unwrap_or(bins.len().saturating_sub(1));
            (format!("{name} = {}", veil_release::human(v, unit)), bin)
        })
        .collect();
    Some(chart::histogram(
        id,
        &format!("{label}: distribution in {}", g.window),
        &labelled,
        &quantiles,
    ))
}

fn window_word(w: Window) -> &'static str {
    match w {
        Window::Day => "day",
        Window::Week => "week",
        Window::Month => "month",
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() {
        "0".into()
    } else {
        s.to_owned()
    }
}

/// A table of text cells.
pub struct Table {
    pub caption: String,
    pub head: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// One section of the posture page.
pub struct Section {
    pub heading: String,
    pub facts: Vec<(String, String)>,
    pub tables: Vec<Table>,
}

#[derive(Template)]
#[template(path = "sections.html")]
struct SectionsPage {
    layout: Layout,
    intro: String,
    sections: Vec<Section>,
}

/// The privacy posture (`veil status` as a page), from the posture document the API
/// serves, plus the last anchored audit head when one is configured.
pub fn posture(viewer: &Viewer, doc: &serde_json::Value, anchored: Option<i64>) -> String {
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "—".into(),
        v => v.to_string(),
    };
    let mut sections = Vec::new();
    let collections = doc["collections"].as_array().cloned().unwrap_or_default();
    sections.push(Section {
        heading: "What is collected".into(),
        facts: vec![
            ("Organization".into(), s(&doc["organization"])),
            ("Policy (SHA-256)".into(), s(&doc["policy_sha256"])),
        ],
        tables: vec![Table {
            caption: "Collections, their fields by class and what happens to each".into(),
            head: vec![
                "collection".into(),
                "zone".into(),
                "staging retention".into(),
                "fields".into(),
            ],
            rows: collections
                .iter()
                .map(|c| {
                    let fields = c["fields"]
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(class, fs)| {
                                    let list: Vec<String> =
                                        fs.as_array().into_iter().flatten().map(s).collect();
                                    format!("{class}: {}", list.join(", "))
                                })
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                        .unwrap_or_default();
                    vec![
                        s(&c["name"]),
                        s(&c["zone"]),
                        s(&c["staging_retention"]),
                        fields,
                    ]
                })
                .collect(),
        }],
    });
    let ids = &doc["direct_identifiers"];
    let total = ids["total"].as_i64().unwrap_or(0);
    let pseudo = ids["pseudonymized"].as_i64().unwrap_or(0);
    sections.push(Section {
        heading: "Identifiers".into(),
        facts: vec![
            ("Direct identifier fields".into(), total.to_string()),
            (
                "Pseudonymized at the door".into(),
                if total > 0 {
                    format!("{pseudo} ({:.0}%)", 100.0 * pseudo as f64 / total as f64)
                } else {
                    "—".into()
                },
            ),
            ("Dropped at the door".into(), s(&ids["dropped"])),
            ("Kept raw".into(), s(&ids["raw_kept"])),
            ("People opted out".into(), s(&doc["opted_out"])),
        ],
        tables: vec![],
    });
    let rejections: Vec<Vec<String>> = doc["rejections_by_reason"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| vec![k.clone(), s(v)])
        .collect();
    // Over time: the last 28 days, one row per day, one column per reason.
    let mut days: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut reasons: BTreeSet<String> = BTreeSet::new();
    for r in doc["rejections_by_day"].as_array().into_iter().flatten() {
        let reason = s(&r["reason"]);
        reasons.insert(reason.clone());
        days.entry(s(&r["day"]).chars().take(10).collect())
            .or_default()
            .insert(reason, s(&r["events"]));
    }
    let mut head = vec!["day".to_owned()];
    head.extend(reasons.iter().cloned());
    let by_day = Table {
        caption: "Refused in the last 28 days, by day and reason".into(),
        head,
        rows: days
            .into_iter()
            .map(|(day, counts)| {
                let mut row = vec![day];
                row.extend(
                    reasons
                        .iter()
                        .map(|r| counts.get(r).cloned().unwrap_or_else(|| "0".into())),
                );
                row
            })
            .collect(),
    };
    sections.push(Section {
        heading: "Rejections".into(),
        facts: vec![],
        tables: vec![
            Table {
                caption:
                    "Events refused at the door, by reason (what quarantine holds, values redacted)"
                        .into(),
                head: vec!["reason".into(), "events".into()],
                rows: rejections,
            },
            by_day,
        ],
    });
    sections.push(Section {
        heading: "Privacy budget".into(),
        facts: vec![],
        tables: vec![
            Table {
                caption: "Per collection and budget period (the current one and the two before)"
                    .into(),
                head: vec![
                    "collection".into(),
                    "period from".into(),
                    "budget ε".into(),
                    "spent ε".into(),
                    "left ε".into(),
                ],
                rows: doc["budget"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .flat_map(|(c, b)| {
                        let row = |p: &serde_json::Value| {
                            vec![
                                c.clone(),
                                s(&p["period_from"]),
                                s(&b["epsilon"]),
                                trim(p["spent"].as_f64().unwrap_or(0.0)),
                                trim(p["left"].as_f64().unwrap_or(0.0)),
                            ]
                        };
                        let mut rows = vec![row(b)];
                        rows.extend(
                            b["earlier_periods"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(row),
                        );
                        rows
                    })
                    .collect(),
            },
            Table {
                caption: "Spent by principal, all periods".into(),
                head: vec!["principal / collection".into(), "ε".into()],
                rows: doc["budget_spent_by_principal"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| vec![k.clone(), trim(v.as_f64().unwrap_or(0.0))])
                    .collect(),
            },
        ],
    });
    let stamp = |v: &serde_json::Value| match v.as_i64() {
        Some(t) => time(t),
        None => s(v),
    };
    sections.push(Section {
        heading: "Seal, retention and keys".into(),
        facts: vec![
            ("Last seal".into(), stamp(&doc["last_seal"])),
            ("Last purge".into(), stamp(&doc["last_purge"]["at"])),
            ("Key vault".into(), s(&doc["vault"]["location"])),
        ],
        tables: vec![Table {
            caption: "Key epochs: a shredded epoch's data can no longer be linked to anyone".into(),
            head: vec![
                "epoch".into(),
                "from".into(),
                "until".into(),
                "state".into(),
                "shredded at".into(),
            ],
            rows: doc["vault"]["epochs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    vec![
                        s(&e["epoch"]),
                        s(&e["from"]),
                        s(&e["until"]),
                        s(&e["state"]),
                        s(&e["shredded_at"]),
                    ]
                })
                .collect(),
        }],
    });
    let audit = &doc["audit"];
    sections.push(Section {
        heading: "Audit log".into(),
        facts: vec![
            ("Entries".into(), s(&audit["entries"])),
            (
                "Hash chain".into(),
                if audit["verified"].as_bool() == Some(true) {
                    "verified".into()
                } else {
                    format!("NOT verified: {}", s(&audit["problem"]))
                },
            ),
            ("Head".into(), s(&audit["head"])),
            (
                "Last anchored entry".into(),
                anchored
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "no anchor configured or none yet".into()),
            ),
        ],
        tables: vec![],
    });
    sections.push(Section {
        heading: "Grants and contests".into(),
        facts: vec![],
        tables: vec![
            Table {
                caption: "Live and pending grants to read staging".into(),
                head: vec![
                    "grant".into(),
                    "scope".into(),
                    "requester".into(),
                    "state".into(),
                    "expires".into(),
                ],
                rows: doc["grants"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|g| {
                        vec![
                            s(&g["id"]),
                            s(&g["scope"]),
                            s(&g["requester"]),
                            s(&g["state"]),
                            s(&g["expires_at"]),
                        ]
                    })
                    .collect(),
            },
            Table {
                caption: match (
                    doc["open_contests"].as_array().map_or(0, Vec::len),
                    doc["open_contests_total"].as_u64().unwrap_or(0),
                ) {
                    (shown, total) if (shown as u64) < total => format!(
                        "Open contests of released numbers: the newest {shown} of {total} (all in veil contest --list)"
                    ),
                    _ => "Open contests of released numbers".into(),
                },
                head: vec!["metric".into(), "window".into(), "note".into()],
                rows: doc["open_contests"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| vec![s(&c["metric"]), s(&c["window"]), s(&c["note"])])
                    .collect(),
            },
        ],
    });
    render(&SectionsPage {
        layout: Layout::new("Privacy posture", Some(Page::Posture), Some(viewer)),
        intro: "What Veil collects, how it protects it, and the state of its controls. Numbers here describe the system, never a person.".into(),
        sections,
    })
}

/// A UTC time for people.
pub fn time(t: i64) -> String {
    match chrono::DateTime::from_timestamp(t, 0) {
        Some(d) if t != i64::MIN && t != i64::MAX => d.format("%Y-%m-%d %H:%M UTC").to_string(),
        _ => "—".into(),
    }
}

/// One audit entry as the audit page lists it.
pub struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// The audit page's filter and paging state.
pub struct AuditQuery {
    pub action: String,
    pub principal: String,
    pub since: i64,
    /// The `since` of the next page, when there is one.
    pub next: Option<i64>,
    pub actions: Vec<String>,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage<'a> {
    layout: Layout,
    rows: &'a [AuditRow],
    q: &'a AuditQuery,
    next_href: Option<String>,
}

/// The audit log, paged by sequence number and filtered by action and principal.
pub fn audit(viewer: &Viewer, rows: &[AuditRow], q: &AuditQuery) -> String {
    let next_href = q.next.map(|n| {
        let query = serde_urlencoded::to_string([
            ("since", n.to_string().as_str()),
            ("action", &q.action),
            ("principal", &q.principal),
        ])
        .expect("strings encode");
        format!("/audit?{query}")
    });
    render(&AuditPage {
        layout: Layout::new("Audit log", Some(Page::Audit), Some(viewer)),
        rows,
        q,
        next_href,
    })
}

/// One grant as the grants page lists it.
pub struct GrantRow {
    pub id: String,
    pub requester: String,
    pub scope: String,
    pub purpose: String,
    pub state: String,
    pub approvals: String,
    /// "expires in 1d 3h" or when it expired.
    pub expiry: String,
    pub may_approve: bool,
    pub may_revoke: bool,
}

#[derive(Template)]
#[template(path = "grants.html")]
struct GrantsPage<'a> {
    layout: Layout,
    rows: &'a [GrantRow],
    may_request: bool,
    scopes: Vec<String>,
    flash: Option<&'a str>,
}

/// Grants: request, approve (two roles, never one's own), revoke, each expiry counting down.
pub fn grants(
    viewer: &Viewer,
    rows: &[GrantRow],
    may_request: bool,
    policy: &Policy,
    flash: Option<&str>,
) -> String {
    render(&GrantsPage {
        layout: Layout::new("Grants", Some(Page::Grants), Some(viewer)),
        rows,
        may_request,
        scopes: policy
            .collections()
            .iter()
            .map(|c| c.name.clone())
            .collect(),
        flash,
    })
}

/// How long until `t` from `now`, for people ("3d 4h", "25m").
pub fn countdown(now: i64, t: i64) -> String {
    let d = t - now;
    if d <= 0 {
        return format!("expired {}", time(t));
    }
    let (days, hours, mins) = (d / 86_400, d % 86_400 / 3600, d % 3600 / 60);
    if days > 0 {
        format!("expires in {days}d {hours}h ({})", time(t))
    } else if hours > 0 {
        format!("expires in {hours}h {mins}m ({})", time(t))
    } else {
        format!("expires in {}m ({})", mins.max(1), time(t))
    }
}

#[derive(Template)]
#[template(path = "subjects.html")]
struct SubjectsPage<'a> {
    layout: Layout,
    flash: Option<&'a str>,
}

/// Subject requests for `privacy`: opt-out and erasure by identifier. Export stays in the
/// CLI: its answer holds one person's rows, and no page shows a person.
pub fn subjects(viewer: &Viewer, flash: Option<&str>) -> String {
    render(&SubjectsPage {
        layout: Layout::new("Subject requests", Some(Page::Subjects), Some(viewer)),
        flash,
    })
}

struct FieldText {
    name: String,
    class: String,
    happens: String,
}

struct MetricAbout {
    name: String,
    measures: String,
    does_not_mean: String,
    misread_when: String,
    rule: String,
}

struct CollectionAbout {
    name: String,
    purpose: String,
    lawful_basis: String,
    zone: String,
    retention: String,
    fields: Vec<FieldText>,
    metrics: Vec<MetricAbout>,
}

#[derive(Template)]
#[template(path = "about.html")]
struct AboutPage {
    layout: Layout,
    collections: Vec<CollectionAbout>,
    current: Option<String>,
    names: Vec<String>,
}

/// What happens to a field, in words.
fn happens(f: &veil_policy::Field) -> String {
    match f.transform() {
        Transform::Pseudonymize => "replaced at the door by a keyed pseudonym; the value itself is never stored, and the key is destroyed on schedule".into(),
        Transform::Drop => "dropped at the door: never stored".into(),
        Transform::Redact => "kept only after the personal-data scan; anything that looks personal is replaced by [redacted]".into(),
        Transform::Keep => match f.class() {
            FieldClass::Measure => "kept as a number, used only inside noisy aggregates".into(),
            _ => "kept as a declared value, used to group aggregates".into(),
        },
        Transform::Generalize(_) => "kept only coarsened (a time to its hour, day or week; a number to its bucket; an address to its network)".into(),
    }
}

/// "What is collected about me": per collection, the purpose, every field and what
/// happens to it, retention, who sees what, and every metric's explain lines. `current`
/// narrows it to one collection.
pub fn about(viewer: Option<&Viewer>, policy: &Policy, current: Option<&str>) -> String {
    let human = veil_policy::duration::human;
    let collections = policy
        .collections()
        .iter()
        .filter(|c| current.is_none_or(|n| n == c.name))
        .map(|c| CollectionAbout {
            name: c.name.clone(),
            purpose: c.purpose_sentence(),
            lawful_basis: c.lawful_basis.clone(),
            zone: format!("{:?}", c.zone).to_lowercase(),
            retention: format!(
                "Events are kept {} in staging, readable only under a grant approved by two roles; aggregates {}; then deleted, and the keys that link them to anyone destroyed.",
                human(c.staging_retention),
                human(c.aggregate_retention)
            ),
            fields: c
                .fields
                .iter()
                .map(|f| FieldText { name: f.name().to_owned(), class: f.class().as_str().replace('_', " "), happens: happens(f) })
                .collect(),
            metrics: c
                .metrics
                .iter()
                .map(|m| MetricAbout {
                    name: m.name.clone(),
                    measures: m.explain.measures.clone(),
                    does_not_mean: m.explain.does_not_mean.clone(),
                    misread_when: m.explain.misread_when.clone(),
                    rule: format!(
                        "Released per {} only for groups of at least {} people, with noise (ε {} per window); viewers, analysts and members see these releases, never a person.",
                        window_word(m.window),
                        m.min_group_size,
                        trim(m.epsilon)
                    ),
                })
                .collect(),
        })
        .collect();
    render(&AboutPage {
        layout: Layout::new("What is collected about me", Some(Page::About), viewer),
        collections,
        current: current.map(str::to_owned),
        names: policy
            .collections()
            .iter()
            .map(|c| c.name.clone())
            .collect(),
    })
}
