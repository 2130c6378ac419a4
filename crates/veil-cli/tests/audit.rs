//! Acceptance: any change, deletion, insertion or reordering of audit rows is caught by
//! `veil audit verify`, which names the first bad entry; an untouched log verifies.

mod common;
use common::*;

fn prepared() -> Veil {
    let v = Veil::init();
    let events = v.generate(3, false);
    v.ingest(&events);
    assert_eq!(v.run(&["seal"]).code, 0);
    assert_eq!(v.run(&["report", "builds"]).code, 0);
    assert_eq!(v.run(&["keys", "rotate"]).code, 0);
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 0, "untouched log verifies: {}", r.stdout);
    v
}

fn copy_of(v: &Veil) -> Veil {
    let w = Veil {
        dir: tempfile::tempdir().unwrap(),
        printed: Default::default(),
        init_out: v.init_out.clone(),
    };
    for (p, bytes) in all_files(v.path()) {
        let rel = p.strip_prefix(v.path()).unwrap();
        let to = w.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, bytes).unwrap();
    }
    w
}

fn count(v: &Veil) -> i64 {
    v.sqlite()
        .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
        .unwrap()
}

fn verify_fails_at(v: &Veil, seq: i64) {
    let r = v.run(&["audit", "verify"]);
    assert_eq!(r.code, 1, "tampering must be detected: {}", r.stdout);
    assert!(
        r.stdout.contains(&format!("FAILED at entry #{seq}")),
        "expected entry #{seq} named: {}",
        r.stdout
    );
}

#[test]
fn every_kind_of_tampering_is_detected_and_located() {
    let base = prepared();
    let n = count(&base);
    assert!(n >= 6, "init, policy, ingest, seal, release, rotate: {n}");

    // Changed: one detail edited in place.
    for seq in [1, 3, n] {
        let v = copy_of(&base);
        v.sqlite()
            .execute(
                "UPDATE audit SET detail = replace(detail, '1', '2') || ' ' WHERE seq = ?1",
                [seq],
            )
            .unwrap();
        verify_fails_at(&v, seq);
    }
    // Changed: actor rewritten and the hash recomputed naively (without the chain).
    let v = copy_of(&base);
    v.sqlite()
        .execute("UPDATE audit SET actor = 'someone-else' WHERE seq = 2", [])
        .unwrap();
    verify_fails_at(&v, 2);

    // Deleted: a middle row, and the last row (truncation, caught by the head file).
    let v = copy_of(&base);
    v.sqlite()
        .execute("DELETE FROM audit WHERE seq = 3", [])
        .unwrap();
    verify_fails_at(&v, 3);
    let v = copy_of(&base);
    v.sqlite()
        .execute("DELETE FROM audit WHERE seq = ?1", [n])
        .unwrap();
    verify_fails_at(&v, n);

    // Inserted: a forged row in the middle, renumbering what follows.
    let v = copy_of(&base);
    {
        let c = v.sqlite();
        c.execute("UPDATE audit SET seq = seq + 1000 WHERE seq >= 3", [])
            .unwrap();
        c.execute("UPDATE audit SET seq = seq - 999 WHERE seq >= 1003", [])
            .unwrap();
        let prev: String = c
            .query_row("SELECT hash FROM audit WHERE seq = 2", [], |r| r.get(0))
            .unwrap();
        c.execute("INSERT INTO audit (seq, at, actor, action, detail, prev, hash) VALUES (3, '2026-01-01T00:00:00Z', 'x', 'release', '{}', ?1, ?2)", [&prev, &"0".repeat(64)]).unwrap();
    }
    verify_fails_at(&v, 3);

    // Reordered: contents of two rows swapped.
    let v = copy_of(&base);
    {
        let c = v.sqlite();
        c.execute("UPDATE audit SET seq = -1 WHERE seq = 2", [])
            .unwrap();
        c.execute("UPDATE audit SET seq = 2 WHERE seq = 3", [])
            .unwrap();
        c.execute("UPDATE audit SET seq = 3 WHERE seq = -1", [])
            .unwrap();
    }
    verify_fails_at(&v, 2);

    // The untouched original still verifies.
    assert_eq!(base.run(&["audit", "verify"]).code, 0);
}

#[test]
fn the_log_records_policy_ingest_seal_release_and_keys() {
    let v = prepared();
    let r = v.run(&["audit", "log", "--format", "json"]);
    let actions: Vec<String> = r
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for a in [
        "init",
        "policy_load",
        "ingest",
        "seal",
        "release",
        "key_rotate",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
    // A changed policy is recorded with its hash on the next command.
    let p = v.path().join("policy.yaml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("organization: Example Corp", "organization: Example Corp 2");
    std::fs::write(&p, text).unwrap();
    assert_eq!(v.run(&["status"]).code, 0);
    let r = v.run(&["audit", "log", "--format", "json"]);
    assert_eq!(
        r.stdout
            .lines()
            .filter(|l| l.contains("\"policy_load\""))
            .count(),
        2
    );
}
