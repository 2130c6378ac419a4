//! The door's transforms and guarantees, on a small policy written for them.

use proptest::prelude::*;
use veil_pipeline::{
    staging, Door, Epoch, EpochId, EpochKeys, KeyRing, Limits, Reason, Secret, Source,
};

const POLICY: &str = r#"
version: 1
organization: Test
collections:
  - name: t.event
    purpose: { what: test events, question: does the door work, audience: tests }
    lawful_basis: legitimate_interest
    lawful_basis_ref: DPIA-T
    owner: tests
    zone: operational
    fields:
      user:    { type: string, class: direct_identifier, transform: pseudonymize }
      region:  { type: string, class: quasi_identifier, values: [eu, us] }
      ip:      { type: ip, class: quasi_identifier, transform: generalize, generalize: network, required: false, justification: t }
      at:      { type: timestamp, class: timestamp, transform: generalize, generalize: hour, required: false, justification: t }
      ms:      { type: integer, class: measure, min: 0, max: 1000, out_of_range: clamp }
      size:    { type: integer, class: measure, min: 0, max: 100000, transform: generalize, generalize: 1000, required: false, justification: t }
      strict:  { type: integer, class: measure, min: 0, max: 10, required: false, justification: t }
      note:    { type: string, class: free_text, transform: redact, required: false, justification: t }
      label:   { type: string, class: attribute, max_length: 40, required: false, justification: t }
    metrics:
      - name: m
        kind: sum
        field: ms
        by: [region]
        window: day
        contributor: user
        explain: { measures: a, does_not_mean: b, misread_when: c }
"#;

fn policy() -> veil_policy::Policy {
    veil_policy::load_str(POLICY, "p.yaml", chrono::Utc::now().date_naive())
        .unwrap_or_else(|e| panic!("{e:?}"))
        .0
}

fn ring(seed: u8) -> KeyRing {
    KeyRing::new(
        vec![Epoch {
            id: EpochId(1),
            start: i64::MIN,
            end: i64::MAX,
            created_at: 0,
            shredded_at: None,
            keys: Some(EpochKeys {
                hmac: Secret::from_bytes([seed; 32]),
                data: Secret::from_bytes([seed ^ 1; 32]),
            }),
        }],
        &Secret::from_bytes([seed ^ 2; 32]),
    )
}

fn event(attrs: &str) -> Vec<u8> {
    let t = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    format!(r#"{{"event":"t.event","time":"{t}","attrs":{{{attrs}}}}}"#).into_bytes()
}

fn src() -> Source {
    Source {
        name: "test".into(),
        collections: None,
        consent: None,
    }
}

fn admit(keys: &KeyRing, attrs: &str) -> Result<serde_json::Value, veil_pipeline::Rejection> {
    let p = policy();
    let door = Door::new(
        &p,
        keys,
        Limits::default(),
        chrono::Utc::now().timestamp(),
        vec![],
    );
    door.admit(&event(attrs), &src()).map(|a| {
        // The row as staging stores it: one segment of one event, read back.
        let mut segment = staging::segment_header(&p.collections()[0]);
        segment.extend_from_slice(&a.payload);
        let mut rows = staging::decode_segment(&segment, staging::day_of(a.time)).unwrap();
        assert_eq!(rows.len(), 1);
        let row = rows.pop().unwrap();
        assert_eq!(row.time, a.time);
        let mut attrs = row.attrs;
        attrs.insert("time".into(), row.time.into());
        serde_json::Value::Object(attrs)
    })
}

#[test]
fn generalizes_clamps_redacts_and_pseudonymizes() {
    let k = ring(1);
    let row = admit(
        &k,
        r#""user":"ann@example.com","region":"eu","ip":"203.0.113.77","at":"2026-11-20T10:47:13Z","ms":5000,"size":12345,"note":"ann@example.com hit 10.1.2.3","label":"plain text""#,
    )
    .unwrap();
    assert_eq!(row["ip"], "203.0.113.0/24");
    assert_eq!(row["at"], "2026-11-20T10:00:00Z");
    assert_eq!(row["ms"], 1000, "clamped to max");
    assert_eq!(row["size"], 12000, "bucketed to 1000");
    assert_eq!(row["note"], "[email] hit [ip]");
    assert_eq!(row["label"], "plain text");
    let user = row["user"].as_str().unwrap();
    assert_eq!(user.len(), 22);
    assert!(!row.to_string().contains("ann@"));
    let v6 = admit(
        &k,
        r#""user":"a","region":"eu","ms":1,"ip":"2001:db8:85a3:1234::1""#,
    )
    .unwrap();
    assert_eq!(v6["ip"], "2001:db8:85a3::/48");
}

#[test]
fn rejects_with_reason_and_never_the_value() {
    let k = ring(1);
    let cases = [
        (
            r#""user":"a","region":"eu","ms":1,"strict":11"#,
            Reason::OutOfRange,
        ),
        (
            r#""user":"a","region":"asia","ms":1"#,
            Reason::ValueNotAllowed,
        ),
        (
            r#""user":"a","region":"eu","ms":"secret-value-1""#,
            Reason::WrongType,
        ),
        (r#""user":"a","region":"eu""#, Reason::MissingField),
        (
            r#""user":"a","region":"eu","ms":1,"label":"mail secret-value-1@example.com""#,
            Reason::PiiDetected,
        ),
        (
            r#""user":"a","region":"eu","ms":1,"label":"x","label":"y""#,
            Reason::DuplicateField,
        ),
        (
            r#""user":"a","region":"eu","ms":1,"label":"this label is far longer than forty characters allow""#,
            Reason::TooLong,
        ),
    ];
    for (attrs, reason) in cases {
        let r = admit(&k, attrs).unwrap_err();
        assert_eq!(r.reason(), reason, "{attrs}");
        assert!(!r.message().contains("secret-value"), "{}", r.message());
    }
}

/// The depth check runs only on lines that fail to parse or carry nested values; every
/// verdict must be what running the UTF-8 and depth checks first on every line gives.
#[test]
fn utf8_and_depth_verdicts_hold_wherever_the_bad_bytes_sit() {
    let p = policy();
    let k = ring(1);
    let now = chrono::Utc::now().timestamp();
    let verdict = |line: &[u8], max_depth: usize| {
        let limits = Limits {
            max_depth,
            ..Limits::default()
        };
        let door = Door::new(&p, &k, limits, now, vec![]);
        door.admit(line, &src()).err().map(|r| r.reason())
    };
    let ok = r#""user":"a","region":"eu","ms":1"#;
    let with = |extra: &str| event(&format!("{ok},{extra}"));
    let bad_utf8 = |mut line: Vec<u8>, marker: &str| {
        let at = line
            .windows(marker.len())
            .position(|w| w == marker.as_bytes())
            .expect("marker");
        line[at] = 0xff;
        line
    };
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    assert_eq!(verdict(&event(ok), 8), None);
    // Invalid UTF-8 in a kept value, inside a nested value the parse skips, in a key and
    // outside any string.
    for (line, what) in [
        (bad_utf8(with(r#""label":"Xbc""#), "Xbc"), "kept value"),
        (bad_utf8(with(r#""label":["Xbc"]"#), "Xbc"), "nested value"),
        (bad_utf8(with(r#""Xbc":1"#), "Xbc"), "key"),
        (bad_utf8(event(ok), "{"), "structure"),
    ] {
        assert_eq!(verdict(&line, 8), Some(Reason::InvalidUtf8), "{what}");
    }
    // Too deep wins over the wrong type of a nested value, an unknown field and bad JSON.
    assert_eq!(
        verdict(&with(&format!(r#""label":{}"#, deep(3))), 8),
        Some(Reason::WrongType)
    );
    assert_eq!(
        verdict(&with(&format!(r#""label":{}"#, deep(9))), 8),
        Some(Reason::TooDeep)
    );
    assert_eq!(
        verdict(&with(&format!(r#""label":{}"#, deep(1000))), 8),
        Some(Reason::TooDeep)
    );
    let unknown = format!(
        r#"{{"event":"t.event","time":"2026-11-20T10:00:00Z","x":{}}}"#,
        deep(20)
    );
    assert_eq!(verdict(unknown.as_bytes(), 8), Some(Reason::TooDeep));
    assert_eq!(verdict(deep(1000).as_bytes(), 8), Some(Reason::TooDeep));
    assert_eq!(
        verdict(format!("{}x", deep(1000)).as_bytes(), 8),
        Some(Reason::TooDeep)
    );
    // A limit below two refuses even the attrs object.
    assert_eq!(verdict(&event(ok), 1), Some(Reason::TooDeep));
    assert_eq!(verdict(&event(ok), 2), None);
}

/// A batch holds exactly the events admitted one by one; a rejected event leaves no byte.
#[test]
fn a_batch_holds_what_single_admits_give_and_nothing_of_rejects() {
    let p = policy();
    let k = ring(1);
    let door = Door::new(
        &p,
        &k,
        Limits::default(),
        chrono::Utc::now().timestamp(),
        vec![],
    );
    let lines = [
        event(r#""user":"a","region":"eu","ms":5"#),
        event(r#""user":"b","region":"asia","ms":5"#), // rejected after parsing
        b"{not json".to_vec(),
        event(r#""user":"c","region":"us","ms":7000,"note":"mail c@example.com""#),
    ];
    let mut batch = veil_pipeline::AcceptedBatch::default();
    let mut singles = Vec::new();
    for l in &lines {
        let one = door.admit(l, &src());
        assert_eq!(
            one.is_ok(),
            door.admit_into(
                l,
                &src(),
                veil_pipeline::MissingId::Unidentified,
                &mut batch
            )
            .is_ok()
        );
        singles.extend(one.ok());
    }
    assert_eq!(batch.len(), 2);
    for (got, want) in batch.iter().zip(&singles) {
        let got = veil_pipeline::Accepted::from(got);
        assert_eq!(
            (
                got.time,
                got.dedupe,
                &got.payload,
                &got.contributions,
                got.clamped,
                got.redacted
            ),
            (
                want.time,
                want.dedupe,
                &want.payload,
                &want.contributions,
                want.clamped,
                want.redacted
            )
        );
    }
    batch.clear();
    assert!(batch.is_empty() && batch.get(0).is_none());
}

/// Two metrics of one collection, a day and a week: an event is late when either of its
/// windows is sealed.
const TWO_WINDOWS: &str = r#"
version: 1
organization: Test
collections:
  - name: t.late
    purpose: { what: test events, question: are late events refused, audience: tests }
    lawful_basis: legitimate_interest
    lawful_basis_ref: DPIA-T
    owner: tests
    zone: operational
    fields:
      user:   { type: string, class: direct_identifier, transform: pseudonymize }
      region: { type: string, class: quasi_identifier, values: [eu, us] }
    metrics:
      - name: daily
        kind: count
        by: [region]
        window: day
        contributor: user
        explain: { measures: a, does_not_mean: b, misread_when: c }
      - name: weekly
        kind: count
        by: [region]
        window: week
        contributor: user
        explain: { measures: a, does_not_mean: b, misread_when: c }
"#;

/// Unix seconds of a UTC time in November 2026 (the 16th is a Monday).
fn nov(day: u32, hour: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(2026, 11, day)
        .unwrap()
        .and_hms_opt(hour, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp()
}

/// Spec §4: an event for a window already sealed is answered `late` — whole, with no
/// value in the rejection and nothing written — for a seal of any of its metrics;
/// before this, the door accepted it and silently dropped its contributions.
#[test]
fn an_event_in_a_sealed_window_of_any_metric_is_rejected_late_and_leaves_nothing() {
    let p = veil_policy::load_str(TWO_WINDOWS, "p.yaml", chrono::Utc::now().date_naive())
        .unwrap_or_else(|e| panic!("{e:?}"))
        .0;
    let k = ring(1);
    let now = nov(20, 12); // Friday
    let line = |day: u32, hour: u32| {
        let t = chrono::DateTime::from_timestamp(nov(day, hour), 0).unwrap();
        format!(
            r#"{{"event":"t.late","time":"{}","attrs":{{"user":"ann.marker@example.com","region":"eu"}}}}"#,
            t.format("%Y-%m-%dT%H:%M:%SZ")
        )
        .into_bytes()
    };
    let verdict = |sealed: Vec<i64>, day: u32, hour: u32| {
        let door = Door::new(&p, &k, Limits::default(), now, sealed);
        let mut batch = veil_pipeline::AcceptedBatch::default();
        let unnamed = veil_pipeline::MissingId::Unidentified;
        // An event of another day first (accepted unless its window is sealed too).
        let _ = door.admit_into(&line(20, 9), &src(), unnamed, &mut batch);
        let held = |b: &veil_pipeline::AcceptedBatch| {
            b.iter()
                .map(|a| (a.payload.to_vec(), a.contributions.to_vec()))
                .collect::<Vec<_>>()
        };
        let before = held(&batch);
        let r = door.admit_into(&line(day, hour), &src(), unnamed, &mut batch);
        if r.is_err() {
            assert_eq!(
                held(&batch),
                before,
                "a rejected event leaves the batch as it was"
            );
        } else {
            let a = batch.get(batch.len() - 1).unwrap();
            assert_eq!(a.contributions.len(), 2, "both metrics count it");
        }
        r
    };
    let late = |r: Result<(), veil_pipeline::Rejection>| match r {
        Err(r) if r.reason() == Reason::Late => {
            assert_eq!(r.reason().code(), "late");
            assert!(r.message().contains("already sealed"), "{}", r.message());
            assert_eq!(r.collection(), Some("t.late"));
            let shown = format!("{r:?}");
            assert!(
                !shown.contains("marker") && !shown.contains("eu\""),
                "{shown}"
            );
            true
        }
        Err(r) => panic!("rejected for another reason: {r:?}"),
        Ok(()) => false,
    };
    // The daily metric sealed before Wednesday: Tuesday is late, Wednesday is not.
    let daily = vec![nov(18, 0), i64::MIN];
    assert!(late(verdict(daily.clone(), 17, 23)));
    assert!(!late(verdict(daily.clone(), 18, 0)));
    // Only the weekly metric sealed (before this Monday): last Sunday is late although
    // its day is open for the daily metric.
    let weekly = vec![i64::MIN, nov(16, 0)];
    assert!(late(verdict(weekly.clone(), 15, 23)));
    assert!(!late(verdict(weekly, 16, 0)));
    // A weekly boundary inside a week (a policy that once had a daily window): the week
    // that starts before it is sealed as a whole, so Thursday of it is late.
    let inside = vec![i64::MIN, nov(18, 0)];
    assert!(late(verdict(inside.clone(), 17, 12)));
    assert_eq!(
        veil_pipeline::late_before(&p, &inside),
        vec![nov(23, 0)],
        "late until the next week starts"
    );
    // Nothing sealed: nothing is late.
    assert!(!late(verdict(vec![], 13, 12)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// A pseudonym is stable under one key and unlinkable across keys; it never contains the identifier.
    #[test]
    fn pseudonyms_are_stable_per_key_and_differ_across_keys(id in "[a-z0-9.@]{1,40}") {
        let (a, b) = (ring(1), ring(2));
        let attrs = format!(r#""user":"{id}","region":"eu","ms":1"#);
        let p1 = admit(&a, &attrs).unwrap()["user"].clone();
        let p2 = admit(&a, &attrs).unwrap()["user"].clone();
        let p3 = admit(&b, &attrs).unwrap()["user"].clone();
        prop_assert_eq!(&p1, &p2);
        prop_assert_ne!(&p1, &p3);
        prop_assert!(id.len() < 4 || !p1.as_str().unwrap().contains(&id));
    }

    /// No input line panics the door.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let p = policy();
        let k = ring(3);
        let door = Door::new(&p, &k, Limits::default(), chrono::Utc::now().timestamp(), vec![]);
        let _ = door.admit(&bytes, &src());
    }
}

/// The OpenTelemetry emitter attributes are dropped by default and counted; a declared
/// field is never dropped, whatever pattern matches it; anything else undeclared still
/// rejects the event; an explicit `defaults.ignore_attributes: []` drops nothing.
#[test]
fn ignore_attributes_drop_what_describes_the_emitter_and_nothing_declared() {
    let k = ring(3);
    let p = policy();
    let door = Door::new(
        &p,
        &k,
        Limits::default(),
        chrono::Utc::now().timestamp(),
        vec![],
    );
    let base = r#""user":"ann@example.com","region":"eu","ms":5"#;
    let a = door
        .admit(
            &event(&format!(
                r#"{base},"code.file.path":"/srv/x.py","code.line.number":12,"exception.stacktrace":"Traceback…","thread.name":"main","log.iostream":"stderr""#
            )),
            &src(),
        )
        .unwrap();
    assert_eq!(a.dropped, 5);
    let plain = door.admit(&event(base), &src()).unwrap();
    assert_eq!(plain.dropped, 0);
    assert_eq!(
        a.payload, plain.payload,
        "nothing of a dropped attribute is staged"
    );
    // A repeated dropped attribute is a repeated key like any other.
    let e = door
        .admit(
            &event(&format!(
                r#"{base},"code.line.number":1,"code.line.number":2"#
            )),
            &src(),
        )
        .unwrap_err();
    assert_eq!(e.reason(), Reason::DuplicateField);
    // Not a prefix match on a bare name, and case matters.
    for k in ["code", "codex.file", "Code.file.path", "userx"] {
        let e = door
            .admit(&event(&format!(r#"{base},"{k}":"v""#)), &src())
            .unwrap_err();
        assert_eq!(e.reason(), Reason::FieldNotAllowed, "{k}");
    }

    // A declared field under an ignored prefix is checked like any other field.
    let declared = POLICY.replace(
        "      label:",
        "      thread.name: { type: string, class: attribute, values: [main], required: false, justification: t }\n      label:",
    );
    let (p2, findings) =
        veil_policy::load_str(&declared, "p.yaml", chrono::Utc::now().date_naive()).unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f.rule == "otel" && f.field.as_deref() == Some("thread.name")),
        "{findings:#?}"
    );
    let door = Door::new(
        &p2,
        &k,
        Limits::default(),
        chrono::Utc::now().timestamp(),
        vec![],
    );
    let e = door
        .admit(
            &event(&format!(r#"{base},"thread.name":"worker-7""#)),
            &src(),
        )
        .unwrap_err();
    assert_eq!(e.reason(), Reason::ValueNotAllowed);

    // The defaults replaced by an empty list: the bridge's attributes reject again, and
    // lint says that a standard bridge would be rejected.
    let none = POLICY.replace(
        "organization: Test\n",
        "organization: Test\ndefaults: { ignore_attributes: [] }\n",
    );
    let (p3, findings) =
        veil_policy::load_str(&none, "p.yaml", chrono::Utc::now().date_naive()).unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f.rule == "otel" && f.message.contains("code.file.path")),
        "{findings:#?}"
    );
    let door = Door::new(
        &p3,
        &k,
        Limits::default(),
        chrono::Utc::now().timestamp(),
        vec![],
    );
    let e = door
        .admit(&event(&format!(r#"{base},"code.line.number":3"#)), &src())
        .unwrap_err();
    assert_eq!(e.reason(), Reason::FieldNotAllowed);
}
