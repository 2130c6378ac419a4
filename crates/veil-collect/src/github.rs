//! GitHub REST API JSON, as saved to files by `gh api --paginate`, turned into delivery
//! facts: merged pull requests, reviews, workflow runs, production deployments and the
//! changes each deployment shipped. Titles, bodies, comments and branch names are never
//! kept: the typed records below have no field for them, except the two a revert is
//! recognized by, which are read into one boolean and dropped.
//!
//! The layout of a saved repository (`DIR/OWNER/REPO/`), every file optional:
//!
//! | file | from |
//! |---|---|
//! | `pulls.json` | `gh api --paginate 'repos/O/R/pulls?state=closed&per_page=100'` |
//! | `pulls/N/commits.json` | `gh api --paginate repos/O/R/pulls/N/commits` |
//! | `pulls/N/reviews.json` | `gh api --paginate repos/O/R/pulls/N/reviews` |
//! | `runs.json` | `gh api --paginate 'repos/O/R/actions/runs?per_page=100'` |
//! | `deployments.json` | `gh api --paginate 'repos/O/R/deployments?per_page=100'` |
//! | `deployments/ID/statuses.json` | `gh api --paginate repos/O/R/deployments/ID/statuses` |
//! | `commits.json` | `gh api --paginate 'repos/O/R/commits?sha=BRANCH&per_page=100'`, once per branch deployed from |
//!
//! How each delivery metric is derived is documented in `docs/dora.md`; the rules live
//! in [`derive`] and are tested by hand computation in `tests/dora.rs`.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use veil_policy::TeamMap;

use crate::events::{event_id, generalized_time, teams_of};

/// The collections the GitHub collector writes to.
pub const PULL_REQUEST_EVENT: &str = "dev.pull_request";
pub const REVIEW_EVENT: &str = "dev.review";
pub const CI_RUN_EVENT: &str = "dev.ci_run";
pub const DEPLOYMENT_EVENT: &str = "dev.deployment";
pub const CHANGE_EVENT: &str = "dev.change";
/// Every collection the GitHub collector may write to, in the order it builds them.
pub const GITHUB_EVENTS: [&str; 5] = [
    PULL_REQUEST_EVENT,
    REVIEW_EVENT,
    CI_RUN_EVENT,
    DEPLOYMENT_EVENT,
    CHANGE_EVENT,
];

/// Why a saved export could not be read. Messages name the file and the item, never a
/// value from it (serde's own messages quote values, so they are not shown).
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error("{dir}: no OWNER/REPO directories with GitHub JSON in it (see docs/collect.md for the layout)")]
    Empty { dir: PathBuf },
    #[error("{file}: cannot read the file")]
    Read { file: PathBuf },
    #[error("{file}: not JSON as `gh api` writes it (line {line}, column {column})")]
    Json {
        file: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("{file}: item {item} is not a {what} as the GitHub REST API returns it (a field is missing or has the wrong type)")]
    Shape {
        file: PathBuf,
        item: usize,
        what: &'static str,
    },
}

#[derive(Debug, Clone, Deserialize)]
struct User {
    login: String,
}

#[derive(Debug, Clone, Deserialize)]
struct PullJson {
    number: u64,
    user: Option<User>,
    created_at: String,
    merged_at: Option<String>,
    merge_commit_sha: Option<String>,
    // Read only to recognize a revert; never kept.
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct ReviewJson {
    id: u64,
    user: Option<User>,
    state: String,
    submitted_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct PrCommitJson {
    commit: GitCommitJson,
}

#[derive(Debug, Clone, Deserialize)]
struct GitCommitJson {
    author: Option<GitActorJson>,
}

#[derive(Debug, Clone, Deserialize)]
struct GitActorJson {
    date: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct ShaJson {
    sha: String,
}

#[derive(Debug, Clone, Deserialize)]
struct CommitJson {
    sha: String,
    #[serde(default)]
    parents: Vec<ShaJson>,
    author: Option<User>,
}

#[derive(Debug, Clone, Deserialize)]
struct RunJson {
    id: u64,
    #[serde(default = "one")]
    run_attempt: u64,
    actor: Option<User>,
    triggering_actor: Option<User>,
    status: Option<String>,
    conclusion: Option<String>,
    run_started_at: Option<String>,
    created_at: String,
    updated_at: Option<String>,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, Deserialize)]
struct DeploymentJson {
    id: u64,
    sha: String,
    environment: String,
    created_at: String,
    creator: Option<User>,
    #[serde(default)]
    production_environment: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
struct StatusJson {
    #[serde(default)]
    id: u64,
    state: String,
    created_at: String,
}

/// A merged pull request as the rules need it.
#[derive(Debug, Clone)]
pub struct Pull {
    pub number: u64,
    pub author: String,
    pub created: i64,
    pub merged: i64,
    pub merge_sha: Option<String>,
    /// Author time of the pull request's first commit (not a squash commit's time).
    pub first_commit: Option<i64>,
    /// Whether it reverts an earlier pull request (GitHub's "Revert" button).
    pub revert: bool,
    /// Submitted reviews: (id, reviewer, state, time).
    pub reviews: Vec<Review>,
}

/// One submitted review.
#[derive(Debug, Clone)]
pub struct Review {
    pub id: u64,
    pub reviewer: String,
    /// `approved`, `changes_requested`, `commented` or `dismissed`.
    pub state: &'static str,
    pub submitted: i64,
}

/// One completed workflow run attempt.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: u64,
    pub attempt: u64,
    pub actor: String,
    /// `success`, `failure`, `cancelled`, `skipped` or `other`.
    pub conclusion: &'static str,
    pub finished: i64,
    pub duration_s: Option<i64>,
}

/// A deployment to a production environment and its final state.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: u64,
    pub sha: String,
    pub environment: String,
    pub creator: Option<String>,
    pub created: i64,
    /// Final state and when it was reached; `None` while still pending.
    pub outcome: Option<(Outcome, i64)>,
}

/// The final state of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// GitHub's `failure` or `error`.
    Failure,
}

/// Everything read from one `OWNER/REPO` directory.
#[derive(Debug, Clone, Default)]
pub struct Export {
    /// `OWNER/REPO`.
    pub repository: String,
    /// Merged pull requests only.
    pub pulls: Vec<Pull>,
    pub runs: Vec<Run>,
    /// Deployments to production environments.
    pub deployments: Vec<Deployment>,
    /// Commit graph: sha → parents, from `commits.json`.
    pub parents: HashMap<String, Vec<String>>,
    /// Commit author logins from `commits.json` (for a deployment of a direct push).
    pub commit_authors: HashMap<String, String>,
    /// Submitted reviews of every pull request in the export, merged or not (a review
    /// happened whether or not its pull request was merged).
    pub reviews: Vec<ReviewOf>,
    /// Open or unmerged pull requests, runs in progress: read, not facts (yet).
    pub not_final: usize,
    /// Pull requests, reviews and runs with no person (a deleted account): not sent.
    pub no_person: usize,
    /// Items listed twice (a page shifted while `gh` paginated): read once.
    pub repeated: usize,
}

/// A submitted review and the author of the pull request it reviews.
#[derive(Debug, Clone)]
pub struct ReviewOf {
    pub pull_author: String,
    pub review: Review,
}

/// Earliest and latest instants a GitHub time may name (2000-01-01, 2100-01-01): an
/// absurd date is a malformed item, not a fact the door refuses on every run.
const TIME_RANGE: std::ops::Range<i64> = 946_684_800..4_102_444_800;

fn time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp())
        .filter(|t| TIME_RANGE.contains(t))
}

/// Reads every item of a `gh api --paginate` file: pages of arrays written one after
/// another, one `--slurp` array of pages, or pages of objects holding the list under
/// `key` (workflow runs). A missing file is an empty list.
fn items<T: DeserializeOwned>(
    file: &Path,
    key: Option<&str>,
    what: &'static str,
) -> Result<Vec<T>, GithubError> {
    let text = match std::fs::read(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(_) => {
            return Err(GithubError::Read {
                file: file.to_owned(),
            })
        }
    };
    let mut raw = Vec::new();
    for page in serde_json::Deserializer::from_slice(&text).into_iter::<serde_json::Value>() {
        let page = page.map_err(|e| GithubError::Json {
            file: file.to_owned(),
            line: e.line(),
            column: e.column(),
        })?;
        flatten(page, key, &mut raw);
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v).map_err(|_| GithubError::Shape {
                file: file.to_owned(),
                item: i + 1,
                what,
            })
        })
        .collect()
}

fn flatten(v: serde_json::Value, key: Option<&str>, out: &mut Vec<serde_json::Value>) {
    match v {
        serde_json::Value::Array(a) => {
            for x in a {
                // A `--slurp` array of pages holds arrays or list objects.
                let is_page = x.is_array() || key.is_some_and(|k| x.get(k).is_some());
                if is_page {
                    flatten(x, key, out);
                } else {
                    out.push(x);
                }
            }
        }
        serde_json::Value::Object(mut o) => match key.and_then(|k| o.remove(k)) {
            Some(list) => flatten(list, None, out),
            None => out.push(serde_json::Value::Object(o)),
        },
        other => out.push(other),
    }
}

fn shape(file: &Path, item: usize, what: &'static str) -> GithubError {
    GithubError::Shape {
        file: file.to_owned(),
        item,
        what,
    }
}

/// Whether a pull request reverts another: GitHub's revert button writes the title
/// `Revert "…"` and the body `Reverts OWNER/REPO#N`.
fn is_revert(title: Option<&str>, body: Option<&str>) -> bool {
    title.is_some_and(|t| t.starts_with("Revert \""))
        || body.is_some_and(|b| {
            b.trim_start()
                .strip_prefix("Reverts ")
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|r| r.contains('#'))
        })
}

fn review_state(s: &str) -> Option<&'static str> {
    Some(match s {
        "APPROVED" => "approved",
        "CHANGES_REQUESTED" => "changes_requested",
        "COMMENTED" => "commented",
        "DISMISSED" => "dismissed",
        _ => return None, // PENDING: not submitted
    })
}

fn conclusion(s: Option<&str>) -> &'static str {
    match s {
        Some("success") => "success",
        Some("failure" | "timed_out" | "startup_failure") => "failure",
        Some("cancelled") => "cancelled",
        Some("skipped") => "skipped",
        _ => "other",
    }
}

/// Reads one saved repository (`DIR/OWNER/REPO`). Deployments count when their
/// environment is `production`, one of `production` (other names), or GitHub marks it
/// `production_environment`.
pub fn read_repository(
    dir: &Path,
    repository: &str,
    production: &[String],
) -> Result<Export, GithubError> {
    let mut ex = Export {
        repository: repository.to_owned(),
        ..Export::default()
    };
    let pulls_file = dir.join("pulls.json");
    let pulls: Vec<PullJson> = items(&pulls_file, None, "pull request")?;
    let mut seen_pulls = HashSet::new();
    let mut seen_reviews = HashSet::new();
    for (i, p) in pulls.into_iter().enumerate() {
        if !seen_pulls.insert(p.number) {
            ex.repeated += 1;
            continue;
        }
        let Some(created) = time(&p.created_at) else {
            return Err(shape(&pulls_file, i + 1, "pull request"));
        };
        let merged = match p.merged_at.as_deref() {
            Some(m) => Some(time(m).ok_or_else(|| shape(&pulls_file, i + 1, "pull request"))?),
            None => None,
        };
        let Some(author) = p.user.map(|u| u.login) else {
            ex.no_person += 1; // a deleted account ("ghost" has a login; none is nobody)
            continue;
        };
        let pdir = dir.join("pulls").join(p.number.to_string());
        let rfile = pdir.join("reviews.json");
        let mut reviews = Vec::new();
        for (j, r) in items::<ReviewJson>(&rfile, None, "review")?
            .into_iter()
            .enumerate()
        {
            let Some(state) = review_state(&r.state) else {
                continue; // pending: not submitted
            };
            let Some(submitted) = r.submitted_at.as_deref() else {
                continue;
            };
            let submitted = time(submitted).ok_or_else(|| shape(&rfile, j + 1, "review"))?;
            let Some(user) = r.user else {
                ex.no_person += 1;
                continue;
            };
            if !seen_reviews.insert(r.id) {
                ex.repeated += 1;
                continue;
            }
            let review = Review {
                id: r.id,
                reviewer: user.login,
                state,
                submitted,
            };
            ex.reviews.push(ReviewOf {
                pull_author: author.clone(),
                review: review.clone(),
            });
            reviews.push(review);
        }
        let Some(merged) = merged else {
            ex.not_final += 1;
            continue;
        };
        let cfile = pdir.join("commits.json");
        let commits: Vec<PrCommitJson> = items(&cfile, None, "pull request commit")?;
        let mut first_commit = None::<i64>;
        for (j, c) in commits.iter().enumerate() {
            let t = c
                .commit
                .author
                .as_ref()
                .and_then(|a| a.date.as_deref())
                .map(|d| time(d).ok_or_else(|| shape(&cfile, j + 1, "pull request commit")))
                .transpose()?;
            if let Some(t) = t {
                first_commit = Some(first_commit.map_or(t, |f: i64| f.min(t)));
            }
        }
        ex.pulls.push(Pull {
            number: p.number,
            revert: is_revert(p.title.as_deref(), p.body.as_deref()),
            author,
            created,
            merged,
            merge_sha: p.merge_commit_sha,
            first_commit,
            reviews,
        });
    }

    let runs_file = dir.join("runs.json");
    let mut seen_runs = HashSet::new();
    for (i, r) in items::<RunJson>(&runs_file, Some("workflow_runs"), "workflow run")?
        .into_iter()
        .enumerate()
    {
        if !seen_runs.insert((r.id, r.run_attempt)) {
            ex.repeated += 1;
            continue;
        }
        if r.status.as_deref() != Some("completed") {
            ex.not_final += 1;
            continue;
        }
        let Some(actor) = r.triggering_actor.or(r.actor).map(|u| u.login) else {
            ex.no_person += 1;
            continue;
        };
        let bad = || shape(&runs_file, i + 1, "workflow run");
        let created = time(&r.created_at).ok_or_else(bad)?;
        let finished = match r.updated_at.as_deref() {
            Some(u) => time(u).ok_or_else(bad)?,
            None => created,
        };
        let started = match r.run_started_at.as_deref() {
            Some(s) => Some(time(s).ok_or_else(bad)?),
            None => None,
        };
        ex.runs.push(Run {
            id: r.id,
            attempt: r.run_attempt,
            actor,
            conclusion: conclusion(r.conclusion.as_deref()),
            finished,
            duration_s: started.map(|s| (finished - s).max(0)),
        });
    }

    let dfile = dir.join("deployments.json");
    let mut seen_deployments = HashSet::new();
    for (i, d) in items::<DeploymentJson>(&dfile, None, "deployment")?
        .into_iter()
        .enumerate()
    {
        if !seen_deployments.insert(d.id) {
            ex.repeated += 1;
            continue;
        }
        // Environments compare case-insensitively (GitHub's do); `production` always counts.
        let environment = d.environment.to_lowercase();
        let is_production = d.production_environment == Some(true)
            || environment == "production"
            || production.iter().any(|p| p.to_lowercase() == environment);
        if !is_production {
            continue;
        }
        let created = time(&d.created_at).ok_or_else(|| shape(&dfile, i + 1, "deployment"))?;
        let sfile = dir
            .join("deployments")
            .join(d.id.to_string())
            .join("statuses.json");
        let mut outcome: Option<(Outcome, (i64, u64))> = None;
        for (j, s) in items::<StatusJson>(&sfile, None, "deployment status")?
            .into_iter()
            .enumerate()
        {
            let o = match s.state.as_str() {
                "success" => Outcome::Success,
                "failure" | "error" => Outcome::Failure,
                _ => continue, // queued, pending, in_progress, inactive (superseded later)
            };
            let t = time(&s.created_at).ok_or_else(|| shape(&sfile, j + 1, "deployment status"))?;
            // The latest final status is the deployment's outcome; statuses of the same
            // second are ordered by their id (GitHub lists newest first).
            if outcome.is_none_or(|(_, at)| (t, s.id) > at) {
                outcome = Some((o, (t, s.id)));
            }
        }
        ex.deployments.push(Deployment {
            id: d.id,
            sha: d.sha,
            environment,
            creator: d.creator.map(|u| u.login),
            created,
            outcome: outcome.map(|(o, (t, _))| (o, t)),
        });
    }

    for c in items::<CommitJson>(&dir.join("commits.json"), None, "commit")? {
        if let Some(a) = c.author {
            ex.commit_authors.insert(c.sha.clone(), a.login);
        }
        ex.parents
            .insert(c.sha, c.parents.into_iter().map(|p| p.sha).collect());
    }
    Ok(ex)
}

/// Every saved repository under `dir`: each `OWNER/REPO` directory holding at least one of
/// the layout's files, in name order.
pub fn read_dir(dir: &Path, production: &[String]) -> Result<Vec<Export>, GithubError> {
    let list = |d: &Path| -> Result<Vec<PathBuf>, GithubError> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .map_err(|_| GithubError::Read { file: d.to_owned() })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        v.sort();
        Ok(v)
    };
    let mut out = Vec::new();
    for owner in list(dir)? {
        for repo in list(&owner)? {
            let has_data = [
                "pulls.json",
                "runs.json",
                "deployments.json",
                "commits.json",
            ]
            .iter()
            .any(|f| repo.join(f).is_file());
            if !has_data {
                continue;
            }
            // GitHub's names are case-insensitive: `Acme/Shop` and `acme/shop` are one
            // repository, and its facts must keep their ids.
            let name = format!(
                "{}/{}",
                owner.file_name().unwrap_or_default().to_string_lossy(),
                repo.file_name().unwrap_or_default().to_string_lossy()
            )
            .to_lowercase();
            out.push(read_repository(&repo, &name, production)?);
        }
    }
    if out.is_empty() {
        return Err(GithubError::Empty {
            dir: dir.to_owned(),
        });
    }
    Ok(out)
}

/// One event ready for the door, with its (generalized) time for the retention check.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    pub collection: &'static str,
    /// Start of the UTC day the fact happened on.
    pub time: i64,
    pub line: String,
}

/// What the rules made of one export, besides the events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Derived {
    pub facts: Vec<Fact>,
    /// Deployments still pending (no final status): collected by a later run.
    pub pending_deployments: usize,
    /// Deployments whose commit is not in `commits.json`: held back (like a pending one)
    /// until an export holds that history, because whose changes they shipped, and so
    /// which teams they count for, is unknown.
    pub unknown_ancestry: usize,
    /// Deployments with nobody to credit (no change, no commit author, no creator).
    pub uncredited: usize,
}

fn hours(from: i64, to: i64) -> f64 {
    // Durations are released in hours with one decimal; round here, once.
    ((to - from).max(0) as f64 / 360.0).round() / 10.0
}

fn day_string(t: i64) -> String {
    chrono::DateTime::from_timestamp(generalized_time(t), 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

struct Emit<'a> {
    map: Option<&'a TeamMap>,
    repository: &'a str,
    facts: Vec<Fact>,
}

impl Emit<'_> {
    /// One event per team of `person` (a person in two teams counts in both).
    fn per_team(
        &mut self,
        collection: &'static str,
        fact: &str,
        person: &str,
        at: i64,
        attrs: impl Fn(&str) -> serde_json::Value,
    ) {
        for team in teams_of(self.map, person) {
            self.team(collection, fact, person, team, at, attrs(team));
        }
    }

    fn team(
        &mut self,
        collection: &'static str,
        fact: &str,
        person: &str,
        team: &str,
        at: i64,
        mut attrs: serde_json::Value,
    ) {
        attrs["author"] = person.into();
        attrs["team"] = team.into();
        let line = serde_json::json!({
            "event": collection,
            "time": day_string(at),
            "id": event_id("github", self.repository, fact, team),
            "attrs": attrs,
        })
        .to_string();
        self.facts.push(Fact {
            collection,
            time: generalized_time(at),
            line,
        });
    }
}

/// The delivery rules (`docs/dora.md`), applied to one export: every fact it holds, as
/// envelopes, one per team of the person each fact belongs to.
pub fn derive(ex: &Export, map: Option<&TeamMap>) -> Derived {
    let mut e = Emit {
        map,
        repository: &ex.repository,
        facts: Vec::new(),
    };
    let mut out = Derived::default();

    // Pull requests: cycle time and the wait for a first review by someone else.
    for p in &ex.pulls {
        let first_review = p
            .reviews
            .iter()
            .filter(|r| !r.reviewer.eq_ignore_ascii_case(&p.author))
            .filter(|r| r.submitted >= p.created && r.submitted <= p.merged)
            .map(|r| r.submitted)
            .min();
        e.per_team(
            PULL_REQUEST_EVENT,
            &format!("pull/{}", p.number),
            &p.author,
            p.merged,
            |_| {
                let mut a = serde_json::json!({
                    "cycle_hours": hours(p.created, p.merged),
                    "revert": p.revert,
                });
                if let Some(r) = first_review {
                    a["first_review_hours"] = hours(p.created, r).into();
                }
                a
            },
        );
    }
    // Reviews of every pull request, merged or not.
    for ReviewOf {
        pull_author,
        review: r,
    } in &ex.reviews
    {
        if r.reviewer.eq_ignore_ascii_case(pull_author) {
            continue; // answering one's own pull request is not a review
        }
        e.per_team(
            REVIEW_EVENT,
            &format!("review/{}", r.id),
            &r.reviewer,
            r.submitted,
            |_| serde_json::json!({ "state": r.state }),
        );
    }

    // Workflow runs: one event per completed attempt.
    for r in &ex.runs {
        e.per_team(
            CI_RUN_EVENT,
            &format!("run/{}/{}", r.id, r.attempt),
            &r.actor,
            r.finished,
            |_| {
                let mut a = serde_json::json!({ "conclusion": r.conclusion });
                // Cancelled and skipped runs say nothing about whether the build works.
                match r.conclusion {
                    "success" => a["succeeded"] = 1.into(),
                    "failure" => a["succeeded"] = 0.into(),
                    _ => {}
                }
                if let Some(d) = r.duration_s {
                    a["duration_minutes"] = (((d as f64) / 6.0).round() / 10.0).into();
                }
                a
            },
        );
    }

    // Deployments, per environment in the order they finished.
    let mut by_merge: HashMap<&str, Vec<&Pull>> = HashMap::new();
    for p in &ex.pulls {
        if let Some(sha) = p.merge_sha.as_deref() {
            by_merge.entry(sha).or_default().push(p);
        }
    }
    let mut finished: Vec<&Deployment> = ex
        .deployments
        .iter()
        .filter(|d| d.outcome.is_some())
        .collect();
    out.pending_deployments = ex.deployments.len() - finished.len();
    finished.sort_by_key(|d| (d.outcome.map(|(_, t)| t), d.id));
    let mut shipped: HashSet<u64> = HashSet::new(); // pull requests already in production
                                                    // Commits in the ancestry of a successful deployment so far: a walk stops there, so
                                                    // each commit is walked about once however many deployments there are.
    let mut covered: HashSet<&str> = HashSet::new();
    let mut last_failed: BTreeMap<&str, bool> = BTreeMap::new(); // per environment
    let mut failing_since: BTreeMap<&str, i64> = BTreeMap::new();
    for d in finished {
        let (outcome, at) = d.outcome.expect("filtered");
        let env = d.environment.as_str();
        // The changes this deployment ships: merged pull requests in its own commit's
        // ancestry that no earlier successful deployment shipped.
        let Some((start, _)) = ex.parents.get_key_value(&d.sha) else {
            out.unknown_ancestry += 1;
            continue;
        };
        let mut new_commits: Vec<&str> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut stack = vec![start.as_str()];
        while let Some(c) = stack.pop() {
            if covered.contains(c) || !seen.insert(c) {
                continue;
            }
            new_commits.push(c);
            // Parents outside the saved history end the walk there.
            stack.extend(ex.parents.get(c).into_iter().flatten().map(String::as_str));
        }
        let mut changes: Vec<&Pull> = new_commits
            .iter()
            .filter_map(|c| by_merge.get(c))
            .flatten()
            .copied()
            .filter(|p| !shipped.contains(&p.number))
            .collect();
        changes.sort_by_key(|p| (p.merged, p.number));
        changes.dedup_by_key(|p| p.number);
        if outcome == Outcome::Success {
            covered.extend(new_commits);
        }
        let previous_failed = last_failed.insert(env, outcome == Outcome::Failure) == Some(true);
        let rework = previous_failed || changes.iter().any(|p| p.revert);
        let recovery = match outcome {
            Outcome::Failure => {
                failing_since.entry(env).or_insert(at);
                None
            }
            Outcome::Success => failing_since.remove(env).map(|since| hours(since, at)),
        };
        // Whose deployment it is: the authors of the changes it ships; a re-deploy ships
        // none, and counts for the author of the change its commit is.
        let people: Vec<&str> = if changes.is_empty() {
            by_merge
                .get(d.sha.as_str())
                .and_then(|p| p.first())
                .map(|p| p.author.as_str())
                .or_else(|| ex.commit_authors.get(&d.sha).map(String::as_str))
                .or(d.creator.as_deref())
                .into_iter()
                .collect()
        } else {
            changes.iter().map(|p| p.author.as_str()).collect()
        };
        if people.is_empty() {
            out.uncredited += 1;
        }
        // One event per team among those people; its contributor is the team's author of
        // the newest change.
        let mut teams: BTreeMap<&str, &str> = BTreeMap::new();
        for person in &people {
            for t in teams_of(map, person) {
                teams.insert(t, person);
            }
        }
        for (team, person) in teams {
            let mut a = serde_json::json!({
                "outcome": match outcome { Outcome::Success => "success", Outcome::Failure => "failure" },
                "failed": u8::from(outcome == Outcome::Failure),
                "rework": u8::from(rework),
            });
            if let Some(h) = recovery {
                a["recovery_hours"] = h.into();
            }
            e.team(
                DEPLOYMENT_EVENT,
                &format!("deployment/{}", d.id),
                person,
                team,
                at,
                a,
            );
        }
        if outcome == Outcome::Success {
            for p in changes {
                shipped.insert(p.number);
                let start = p.first_commit.unwrap_or(p.created).min(p.merged);
                e.per_team(
                    CHANGE_EVENT,
                    &format!("change/{}", p.number),
                    &p.author,
                    at,
                    |_| {
                        serde_json::json!({
                            "lead_time_hours": hours(start, at),
                            "revert": p.revert,
                        })
                    },
                );
            }
        }
    }
    out.facts = e.facts;
    out
}
