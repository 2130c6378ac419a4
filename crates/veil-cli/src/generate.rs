//! Realistic synthetic events for the example policy: several teams of different sizes
//! (one below k), product users in three regions, and planted personal data — in
//! identifier fields, free text, undeclared fields and events that must be rejected.
//! Deterministic for a seed and a "now", so tests can recompute every expected number.

use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::io::Write;

/// Teams and their sizes, as the example team map (`examples/teams.yaml`) lists them:
/// realistic engineering teams of 6 to 15 people, and `infra`, whose roster of 3 sits
/// below the default k of 5 and is never shown.
pub const TEAMS: &[(&str, usize)] = &[
    ("data", 6),
    ("infra", 3),
    ("payments", 12),
    ("search", 8),
    ("web", 15),
];

const FIRST: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yusuf", "zoe",
    "amara", "bjorn", "chen", "dilnoza", "emeka", "farah", "goran", "hana", "ingrid", "jamal",
];
const LAST: &[&str] = &[
    "johnson",
    "okafor",
    "lindqvist",
    "tanaka",
    "moreau",
    "kowalski",
    "haddad",
    "fernandes",
    "novak",
    "schmidt",
];

/// Personal data planted in places Veil must never keep it; the leak tests read the same
/// file and search for each line.
pub static PLANTED: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    include_str!("../../../examples/planted-pii.txt")
        .lines()
        .collect()
});

/// The `i`-th developer: an email (the `web` team's at web.example.com, as the example
/// team map's pattern says) and a name.
fn person(i: usize, team: &str) -> (String, String) {
    let f = FIRST[i % FIRST.len()];
    let l = LAST[(i / FIRST.len() + i * 7) % LAST.len()];
    let name = format!("{} {}", capitalize(f), capitalize(l));
    let domain = if team == "web" {
        "web.example.com"
    } else {
        "example.com"
    };
    (format!("{f}.{l}{i}@{domain}"), name)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn ts(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// Generation settings.
pub struct Gen {
    pub seed: u64,
    pub now: i64,
    pub days: i64,
    /// Multiplies event volume (1 = about 9,000 events).
    pub scale: f64,
    /// Include events that must be rejected (malformed, undeclared fields, PII).
    pub bad: bool,
}

/// Writes NDJSON events; returns how many lines were written.
pub fn generate(g: &Gen, out: &mut dyn Write) -> std::io::Result<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(g.seed);
    let mut n = 0u64;
    let mut id = 0u64;
    let day0 = g.now - g.now.rem_euclid(86_400);
    let mut emit = |out: &mut dyn Write, v: serde_json::Value| -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, &v)?;
        out.write_all(b"\n")?;
        n += 1;
        Ok(())
    };
    let mut devs = Vec::new();
    let mut pi = 0;
    for &(team, size) in TEAMS {
        for _ in 0..size {
            devs.push((person(pi, team), team, rng.gen_range(0.5..3.0f64)));
            pi += 1;
        }
    }
    let users: Vec<(String, &str)> = (0..(1500.0 * g.scale.max(0.01)) as usize)
        .map(|i| {
            (
                format!("user{i}@customer{}.example.org", i % 17),
                ["eu", "us", "apac"][i % 3],
            )
        })
        .collect();
    for d in (1..=g.days).rev() {
        let day = day0 - d * 86_400;
        // Developer activity.
        for ((email, name), team, rate) in &devs {
            let builds = (rng.gen_range(0.0..(*rate * 2.0)) * g.scale).round() as u32;
            for _ in 0..builds {
                id += 1;
                let t = day + rng.gen_range(7 * 3600..19 * 3600);
                let status = ["success", "success", "success", "failure", "cancelled"]
                    .choose(&mut rng)
                    .expect("non-empty");
                let dur: i64 = (rng.gen_range(20_000.0f64..2_000_000.0)).round() as i64;
                let mut attrs =
                    json!({"developer": email, "team": team, "status": status, "duration_ms": dur});
                if rng.gen_bool(0.2) {
                    attrs["log_excerpt"] = json!(format!(
                        "build by {name} <{email}> failed: token {}",
                        PLANTED[3]
                    ));
                }
                emit(
                    out,
                    json!({"event": "ci.build_finished", "time": ts(t), "id": format!("b-{id}"), "attrs": attrs}),
                )?;
            }
            if rng.gen_bool((0.4 * g.scale).min(1.0)) {
                id += 1;
                let t = day + rng.gen_range(9 * 3600..18 * 3600);
                let hours = (rng.gen_range(0.5f64..120.0) * 10.0).round() / 10.0;
                emit(
                    out,
                    json!({"event": "pr.merged", "time": ts(t), "id": format!("p-{id}"),
                    "attrs": {"author": email, "team": team, "cycle_hours": hours, "title": format!("Fix flaky test reported by {name}")}}),
                )?;
            }
        }
        // Product telemetry.
        for (user, region) in &users {
            if !rng.gen_bool(0.3) {
                continue;
            }
            for _ in 0..rng.gen_range(1..4) {
                id += 1;
                let t = day + rng.gen_range(0..86_400);
                let feature = ["search", "checkout", "export", "share", "settings"]
                    .choose(&mut rng)
                    .expect("non-empty");
                let ip = format!("203.0.{}.{}", rng.gen_range(0..255), rng.gen_range(1..255));
                let mut attrs = json!({"user_id": user, "feature": feature, "region": region,
                    "app_version": format!("4.{}.{}", rng.gen_range(0..3), rng.gen_range(0..10)), "client_ip": ip});
                if rng.gen_bool(0.1) {
                    attrs["email"] = json!(user);
                }
                emit(
                    out,
                    json!({"event": "app.feature_used", "time": ts(t), "id": format!("f-{id}"), "attrs": attrs}),
                )?;
            }
            if d <= 6 && rng.gen_bool(0.08) {
                id += 1;
                let t = day + rng.gen_range(0..86_400);
                let code = ["E_TIMEOUT", "E_CRASH", "E_NETWORK", "E_AUTH"]
                    .choose(&mut rng)
                    .expect("non-empty");
                let planted = PLANTED.choose(&mut rng).expect("non-empty");
                emit(
                    out,
                    json!({"event": "app.error", "time": ts(t), "id": format!("e-{id}"),
                    "attrs": {"user_id": user, "error_code": code, "message": format!("request for {user} failed near {planted}")}}),
                )?;
            }
        }
    }
    if g.bad {
        let t = ts(day0 - 86_400 + 3600);
        let (email, name) = person(0, "data");
        let bad: Vec<String> = vec![
            // Undeclared fields carrying personal data: the whole event is rejected.
            json!({"event": "ci.build_finished", "time": t, "attrs": {"developer": email, "team": "web", "status": "success", "duration_ms": 1000, "author_name": name, "ssn": PLANTED[12]}}).to_string(),
            json!({"event": "app.feature_used", "time": t, "attrs": {"user_id": "user1@customer1.example.org", "feature": "search", "region": "eu", "app_version": "4.1.1", "card": PLANTED[0]}}).to_string(),
            // PII in a kept free-form field: rejected by the scanner.
            json!({"event": "app.feature_used", "time": t, "attrs": {"user_id": PLANTED[10], "feature": "search", "region": "eu", "app_version": "4111111111111111"}}).to_string(),
            // A personal name as an undeclared field *name*.
            json!({"event": "app.feature_used", "time": t, "attrs": {"user_id": "u", "feature": "search", "region": "eu", "app_version": "4.1.1", "Kwabena Osei-Tutu": 1}}).to_string(),
            // Wrong types and values outside the declared list.
            json!({"event": "ci.build_finished", "time": t, "attrs": {"developer": PLANTED[11], "team": "marketing", "status": "success", "duration_ms": 5}}).to_string(),
            json!({"event": "ci.build_finished", "time": t, "attrs": {"developer": email, "team": "web", "status": "success", "duration_ms": PLANTED[6]}}).to_string(),
            // Unknown event, bad time, malformed JSON, invalid UTF-8 is added below.
            json!({"event": "hr.keystrokes", "time": t, "attrs": {"who": PLANTED[5]}}).to_string(),
            json!({"event": "ci.build_finished", "time": "yesterday", "attrs": {"developer": PLANTED[4]}}).to_string(),
            format!("{{\"event\": \"ci.build_finished\", \"time\": \"{t}\", \"attrs\": {{\"developer\": \"{}\"", PLANTED[2]),
            json!({"event": "pr.merged", "time": t, "attrs": {"author": email, "team": "web", "cycle_hours": 2.5, "title": "x", "reviewer_ip": PLANTED[9]}}).to_string(),
        ];
        for line in bad {
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
            n += 1;
        }
        out.write_all(b"{\"event\": \"app.error\", \"time\": \"")?;
        out.write_all(&[0xff, 0xfe, b'"', b'}', b'\n'])?;
        n += 1;
    }
    Ok(n)
}
