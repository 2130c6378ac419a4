//! Collectors: developer activity read where it lives and turned into envelopes for the
//! one ingest path (`veil-ingest`), locally or to a running gateway. A collector assigns
//! people to teams with the policy's team map, generalizes times and hashes fact ids;
//! the door then pseudonymizes the author like any other event's. Messages, paths, titles
//! and branch names are never read into an event.
//!
//! Sources: `git` (a repository's history, with gitoxide) and `github` (REST API JSON
//! saved by `gh api --paginate`: pull requests, reviews, workflow runs, deployments).

pub mod events;
pub mod git;
pub mod github;

pub use events::{commit_envelopes, event_id, generalized_time, Commit, COMMIT_EVENT};
