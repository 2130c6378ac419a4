//! The team map (`teams.yaml`, named by the policy's `team_map:`): each team's members and
//! roster size. Rosters are public sizes, so a team whose roster is below a metric's
//! `min_group_size` is never shown, whatever the data, at no privacy cost (spec §2).
//!
//! Members are identities (emails, logins) or glob patterns. They are configuration, not
//! data: the map is read from its file, hashed for the audit log, and never written to the
//! data directory.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The value every person in no team is counted under.
pub const UNASSIGNED: &str = "unassigned";

/// `teams.yaml` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeamMap {
    pub teams: BTreeMap<String, RawTeam>,
}

/// One team as written: members and an optional declared size.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeam {
    #[serde(default)]
    pub members: Vec<String>,
    pub size: Option<u32>,
}

/// One team of a loaded map.
#[derive(Debug, Clone)]
pub struct Team {
    name: String,
    roster: u32,
    exact: Vec<String>,
    patterns: globset::GlobSet,
}

impl Team {
    /// The team's name: a declared group value.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its roster size: `size:` when given, else the number of listed members.
    pub fn roster(&self) -> u32 {
        self.roster
    }
}

/// A loaded, checked team map. Built only by [`TeamMap::parse`].
#[derive(Debug, Clone)]
pub struct TeamMap {
    hash: String,
    teams: Vec<Team>,
}

/// Why a team map cannot be used. Messages name teams, never members.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TeamMapError {
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: team {team}: {message}")]
    Team {
        file: String,
        team: String,
        message: String,
    },
    #[error("{file}: {message}")]
    Map { file: String, message: String },
}

fn is_pattern(m: &str) -> bool {
    m.contains(['*', '?', '[', '{'])
}

/// Identities are matched as the door normalizes them: trimmed and case-folded.
fn fold(m: &str) -> String {
    m.trim().to_lowercase()
}

impl TeamMap {
    /// Parses and checks `teams.yaml` text; `file` only labels errors.
    pub fn parse(text: &str, file: &str) -> Result<TeamMap, TeamMapError> {
        let options = serde_saphyr::options! {
            budget: serde_saphyr::budget! { max_nodes: 1_000_000, max_depth: 16 },
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
            strict_booleans: true,
            with_snippet: false,
        };
        let raw: RawTeamMap = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line() as usize, l.column() as usize))
                .unwrap_or((0, 0));
            TeamMapError::Parse {
                file: file.to_owned(),
                line,
                column,
                // The parser's message may quote a scalar; a member is personal data.
                message: "not a team map: expected `teams:` mapping each team name to `members:` (a list) and an optional `size:`".into(),
            }
        })?;
        let err = |team: &str, message: String| TeamMapError::Team {
            file: file.to_owned(),
            team: team.to_owned(),
            message,
        };
        if raw.teams.is_empty() {
            return Err(TeamMapError::Map {
                file: file.to_owned(),
                message: "the map lists no team".into(),
            });
        }
        let mut teams = Vec::new();
        for (name, t) in &raw.teams {
            let safe: String = name
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c))
                .take(64)
                .collect();
            if !crate::analyze::valid_name(name) {
                return Err(err(
                    &safe,
                    "a team name is 1-64 characters of a-z, 0-9, '_', '.', '-'".into(),
                ));
            }
            if name == UNASSIGNED {
                return Err(err(
                    name,
                    "`unassigned` is reserved for people in no team".into(),
                ));
            }
            let mut exact = Vec::new();
            let mut globs = globset::GlobSetBuilder::new();
            let mut has_pattern = false;
            for m in &t.members {
                let m = fold(m);
                if m.is_empty() {
                    return Err(err(name, "a member is empty".into()));
                }
                if is_pattern(&m) {
                    has_pattern = true;
                    let g = globset::GlobBuilder::new(&m)
                        .literal_separator(false)
                        .build()
                        .map_err(|_| err(name, "a member pattern is not a valid glob".into()))?;
                    globs.add(g);
                } else if !exact.contains(&m) {
                    exact.push(m);
                }
            }
            let roster =
                match (t.size, has_pattern) {
                    (Some(s), _) if (s as usize) < exact.len() => {
                        return Err(err(
                            name,
                            format!(
                                "size {s} is smaller than the {} members listed by name",
                                exact.len()
                            ),
                        ))
                    }
                    (Some(s), _) => s,
                    (None, true) => return Err(err(
                        name,
                        "members include a pattern, so the roster cannot be counted: give `size:`"
                            .into(),
                    )),
                    (None, false) if exact.is_empty() => {
                        return Err(err(name, "a team needs members or a `size:`".into()))
                    }
                    (None, false) => exact.len() as u32,
                };
            teams.push(Team {
                name: name.clone(),
                roster,
                exact,
                patterns: globs
                    .build()
                    .map_err(|_| err(name, "a member pattern is not a valid glob".into()))?,
            });
        }
        Ok(TeamMap {
            hash: crate::hash_text(text),
            teams,
        })
    }

    /// Hex SHA-256 of the file: what the audit log records when the map loads.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Every team, by name (alphabetical: teams are listed, never ranked).
    pub fn teams(&self) -> &[Team] {
        &self.teams
    }

    /// The declared values of a `values_from: team_map` field: the teams, then `unassigned`.
    pub fn values(&self) -> Vec<String> {
        let mut v: Vec<String> = self.teams.iter().map(|t| t.name.clone()).collect();
        v.push(UNASSIGNED.to_owned());
        v
    }

    /// The roster of a team value; `None` for `unassigned` and unknown names (no public
    /// size exists for them).
    pub fn roster(&self, team: &str) -> Option<u32> {
        self.teams.iter().find(|t| t.name == team).map(|t| t.roster)
    }

    /// The most teams any member listed by name belongs to (patterns included): a metric
    /// by team must let a person count in that many groups, or seal drops the rest.
    pub fn most_teams_of_one_member(&self) -> usize {
        self.teams
            .iter()
            .flat_map(|t| t.exact.iter())
            .map(|m| self.teams_of(m).len())
            .max()
            .unwrap_or(0)
    }

    /// Every team an identity belongs to (a person in two teams counts in both), or
    /// `[unassigned]`. Matching is on the trimmed, case-folded identity.
    pub fn teams_of(&self, identity: &str) -> Vec<&str> {
        let id = fold(identity);
        let found: Vec<&str> = self
            .teams
            .iter()
            .filter(|t| t.exact.contains(&id) || t.patterns.is_match(&id))
            .map(|t| t.name.as_str())
            .collect();
        if found.is_empty() {
            vec![UNASSIGNED]
        } else {
            found
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "teams:\n  payments:\n    members: [alice@example.com, Bob@Example.com, carol@example.com]\n  web:\n    members: [\"*@web.example.com\"]\n    size: 12\n";

    #[test]
    fn rosters_values_and_assignment() {
        let m = TeamMap::parse(MAP, "teams.yaml").unwrap();
        assert_eq!(m.values(), vec!["payments", "web", "unassigned"]);
        assert_eq!(m.roster("payments"), Some(3));
        assert_eq!(m.roster("web"), Some(12));
        assert_eq!(m.roster(UNASSIGNED), None);
        assert_eq!(m.teams_of(" BOB@example.com"), vec!["payments"]);
        assert_eq!(m.teams_of("dana@web.example.com"), vec!["web"]);
        assert_eq!(m.teams_of("eve@elsewhere.example"), vec![UNASSIGNED]);
        assert_eq!(m.hash().len(), 64);
    }

    #[test]
    fn refuses_what_would_make_a_roster_wrong() {
        for (text, says) in [
            (
                "teams:\n  web:\n    members: [\"*@web.example.com\"]\n",
                "give `size:`",
            ),
            (
                "teams:\n  web:\n    members: [a@x.example, b@x.example]\n    size: 1\n",
                "smaller than",
            ),
            ("teams:\n  unassigned:\n    size: 9\n", "reserved"),
            ("teams:\n  Web Team:\n    size: 9\n", "a team name"),
            ("teams:\n  web:\n    members: []\n", "members or a `size:`"),
            ("teams: {}\n", "no team"),
            (
                "teams:\n  web:\n    size: 9\n    lead: x@y.example\n",
                "not a team map",
            ),
        ] {
            let e = TeamMap::parse(text, "teams.yaml").unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
            assert!(
                !e.contains("x@y.example"),
                "members never appear in errors: {e}"
            );
        }
    }
}
