//! From a collected fact to envelopes: team assignment, time generalization and event ids.
//! Nothing here keeps a raw identity: the author's email goes into the envelope's
//! `author` field, which the door pseudonymizes (the policy must say so), and the event id
//! is a hash of the repository and the commit, never the commit id itself.

use sha2::{Digest, Sha256};
use veil_policy::TeamMap;

/// The collection the git collector writes to.
pub const COMMIT_EVENT: &str = "dev.commit";

/// One commit as the git collector saw it (before the door).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Hex commit id: used for the event id's hash only, never sent.
    pub id: String,
    /// The author's email after `.mailmap`.
    pub author_email: String,
    /// Author time, Unix seconds.
    pub author_time: i64,
    /// Number of parents (2 or more: a merge).
    pub parents: usize,
    pub files_changed: u32,
    pub lines_added: u64,
    pub lines_deleted: u64,
}

/// Start of the UTC day holding `t`: the time a collected event carries. Every metric
/// window is a day or longer, so windows are unchanged, and the hour and minute of a
/// person's work never reach the store.
pub fn generalized_time(t: i64) -> i64 {
    t.div_euclid(86_400) * 86_400
}

/// The idempotency id of a collected fact: a hash of the source kind, the repository
/// name and the fact's own id (and the team, when one fact is counted in two teams), so
/// re-collecting counts nothing twice and the id reveals no commit.
pub fn event_id(kind: &str, repository: &str, fact: &str, team: &str) -> String {
    let mut h = Sha256::new();
    for part in [kind, repository, fact, team] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    format!("{kind}-{}", hex::encode(&h.finalize()[..16]))
}

/// The teams an identity counts in: the map's teams (a person in two counts in both),
/// or `unassigned` (also when there is no map).
pub fn teams_of<'m>(map: Option<&'m TeamMap>, identity: &str) -> Vec<&'m str> {
    match map {
        Some(m) => m.teams_of(identity),
        None => vec![veil_policy::UNASSIGNED],
    }
}

/// The envelopes (NDJSON lines) of one commit: one per team its author counts in.
pub fn commit_envelopes(c: &Commit, repository: &str, map: Option<&TeamMap>) -> Vec<String> {
    let time = chrono::DateTime::from_timestamp(generalized_time(c.author_time), 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    teams_of(map, &c.author_email)
        .into_iter()
        .map(|team| {
            serde_json::json!({
                "event": COMMIT_EVENT,
                "time": time,
                "id": event_id("git", repository, &c.id, team),
                "attrs": {
                    "author": c.author_email,
                    "team": team,
                    "repository": repository,
                    "merge": c.parents > 1,
                    "files_changed": c.files_changed,
                    "lines_added": c.lines_added,
                    "lines_deleted": c.lines_deleted,
                }
            })
            .to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_distinct_and_reveal_no_commit() {
        let a = event_id("git", "shop", "0123abcd", "payments");
        assert_eq!(a, event_id("git", "shop", "0123abcd", "payments"));
        assert_ne!(a, event_id("git", "shop", "0123abcd", "web"));
        assert_ne!(a, event_id("git", "shop2", "0123abcd", "payments"));
        // Length-prefixed parts: moving a byte between parts changes the id.
        assert_ne!(
            event_id("git", "ab", "c", ""),
            event_id("git", "a", "bc", "")
        );
        assert!(!a.contains("0123abcd"));
    }

    #[test]
    fn a_person_in_two_teams_gets_one_event_per_team_and_no_team_is_unassigned() {
        let map = TeamMap::parse(
            "teams:\n  web:\n    members: [ann@x.example]\n  data:\n    members: [ann@x.example, bo@x.example]\n",
            "teams.yaml",
        )
        .unwrap();
        let c = Commit {
            id: "f00d".into(),
            author_email: "Ann@X.example".into(),
            author_time: 1_700_000_123,
            parents: 2,
            files_changed: 3,
            lines_added: 10,
            lines_deleted: 2,
        };
        let lines = commit_envelopes(&c, "shop", Some(&map));
        assert_eq!(lines.len(), 2);
        let teams: Vec<String> = lines
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["attrs"]["team"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(teams, ["data", "web"]);
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["time"], "2023-11-14T00:00:00Z", "generalized to the day");
        assert_eq!(v["attrs"]["merge"], true);
        let other = Commit {
            author_email: "zed@y.example".into(),
            ..c
        };
        let lines = commit_envelopes(&other, "shop", Some(&map));
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("\"team\":\"unassigned\""));
    }
}
