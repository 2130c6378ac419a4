//! Acceptance: every report output (table, CSV, JSON) carries only values from a stored
//! release record; JSON's groups are the stored groups exactly.

mod common;
use common::*;

fn numbers(s: &str) -> Vec<String> {
    s.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .filter(|t| {
            t.chars().any(|c| c.is_ascii_digit()) && !t.contains("--") && t.parse::<f64>().is_ok()
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn report_outputs_only_carry_values_from_stored_release_records() {
    let v = Veil::init();
    let events = v.generate(21, false);
    v.ingest(&events);
    assert_eq!(v.run(&["seal"]).code, 0);
    let json = v.run(&["report", "builds", "--format", "json"]);
    let table = v.run(&["report", "builds"]);
    let csv = v.run(&["report", "builds", "--format", "csv"]);
    for r in [&json, &table, &csv] {
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let docs: Vec<String> = v
        .sqlite()
        .prepare("SELECT document FROM releases")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(docs.len(), 1, "one query, one stored release");
    let doc: serde_json::Value = serde_json::from_str(&docs[0]).unwrap();
    let answer: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        answer["groups"], doc["groups"],
        "JSON groups are the stored release's groups exactly"
    );
    assert_eq!(answer["parts"][0], doc["release_id"]);
    let allowed: Vec<String> = numbers(&docs[0]);
    let released: Vec<&serde_json::Value> = doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["suppressed"] == false)
        .collect();
    assert!(!released.is_empty());
    // Every number in a table or CSV data row appears in the stored document.
    for (name, out) in [("table", &table.stdout), ("csv", &csv.stdout)] {
        let rows: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        assert_eq!(
            rows.len(),
            doc["groups"].as_array().unwrap().len(),
            "{name}: one row per group"
        );
        for row in rows {
            // Skip the window label; every other number must be in the stored document.
            for field in row
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|f| !f.is_empty())
                .skip(1)
            {
                if field.parse::<f64>().is_ok() {
                    assert!(
                        allowed.iter().any(|a| a == field),
                        "{name}: {field} in {row:?} is not from the stored release"
                    );
                }
            }
        }
        for g in &released {
            let value = g["value"].to_string();
            assert!(
                out.contains(&value),
                "{name} shows the released value {value}"
            );
        }
    }
    // An edited stored record is refused by every output, never served (issue 13 §2c):
    // the release's audit entry recorded the document's hash.
    let forged = docs[0].replacen(&released[0]["value"].to_string(), "987654321", 1);
    v.sqlite()
        .execute("UPDATE releases SET document = ?1", [&forged])
        .unwrap();
    for fmt in ["table", "csv", "json"] {
        let r = v.run(&["report", "builds", "--format", fmt]);
        assert_ne!(r.code, 0, "{fmt}: an edited release must be refused");
        assert!(
            !r.stdout.contains("987654321") && !r.stderr.contains("987654321"),
            "{fmt} output must never show the edited value:\n{}",
            r.stdout
        );
        assert!(r.stderr.contains("audit"), "{fmt}: says why: {}", r.stderr);
    }
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("was changed"), "{}", r.stdout);
}
