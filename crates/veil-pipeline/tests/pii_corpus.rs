//! The PII scanner against its labelled corpus (`tests/data/pii_corpus.tsv`): recall on
//! the positives at least 98%, false positives on ordinary telemetry at most 1%, and
//! redaction that leaves nothing of what it found. The corpus is synthetic, so printing
//! its cases on failure prints nobody's data.
//!
//! `cargo test -p veil-pipeline --test pii_corpus -- --nocapture` prints the table that
//! `docs/pii-scanner.md` quotes.

use proptest::prelude::*;
use std::collections::BTreeMap;
use veil_pipeline::{normalize, pii};

const CORPUS: &str = include_str!("data/pii_corpus.tsv");

struct Case {
    line: usize,
    positive: bool,
    category: String,
    value: String,
}

/// Undoes the corpus escapes: `\t`, `\n`, `\\`, `\u{XXXX}`.
fn unescape(s: &str, line: usize) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('u') => {
                assert_eq!(it.next(), Some('{'), "line {line}: \\u needs {{");
                let hex: String = it.by_ref().take_while(|&c| c != '}').collect();
                let cp = u32::from_str_radix(&hex, 16).expect("hex code point");
                out.push(char::from_u32(cp).expect("valid code point"));
            }
            other => panic!("line {line}: unknown escape \\{other:?}"),
        }
    }
    out
}

fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    for (i, l) in CORPUS.lines().enumerate() {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let mut f = l.splitn(3, '\t');
        let (Some(label), Some(category), Some(value)) = (f.next(), f.next(), f.next()) else {
            panic!("line {}: expected label<TAB>category<TAB>value", i + 1);
        };
        assert!(
            label == "pos" || label == "neg",
            "line {}: label {label}",
            i + 1
        );
        cases.push(Case {
            line: i + 1,
            positive: label == "pos",
            category: category.to_owned(),
            value: unescape(value, i + 1),
        });
    }
    cases
}

#[derive(Default)]
struct Row {
    pos: usize,
    detected: usize,
    neg: usize,
    false_pos: usize,
}

#[test]
fn recall_and_false_positives() {
    let cases = corpus();
    let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
    let mut misses = Vec::new();
    let mut false_pos = Vec::new();
    for c in &cases {
        let row = rows.entry(&c.category).or_default();
        let found = pii::first(&c.value);
        if c.positive {
            row.pos += 1;
            if found.is_some() {
                row.detected += 1;
            } else {
                misses.push(c);
            }
        } else {
            row.neg += 1;
            if let Some(k) = found {
                row.false_pos += 1;
                false_pos.push((c, k));
            }
        }
    }
    let (pos, det, neg, fp) = rows.values().fold((0, 0, 0, 0), |a, r| {
        (
            a.0 + r.pos,
            a.1 + r.detected,
            a.2 + r.neg,
            a.3 + r.false_pos,
        )
    });
    let recall = det as f64 / pos as f64;
    let fp_rate = fp as f64 / neg as f64;

    println!("| category | positives | detected | recall | negatives | false positives |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (cat, r) in &rows {
        let recall = if r.pos > 0 {
            format!("{:.0}%", 100.0 * r.detected as f64 / r.pos as f64)
        } else {
            "".into()
        };
        let p = |n: usize, show: bool| if show { n.to_string() } else { String::new() };
        println!(
            "| {cat} | {} | {} | {recall} | {} | {} |",
            p(r.pos, r.pos > 0),
            p(r.detected, r.pos > 0),
            p(r.neg, r.neg > 0),
            p(r.false_pos, r.neg > 0)
        );
    }
    println!(
        "| **all** | {pos} | {det} | {:.1}% | {neg} | {fp} ({:.1}%) |",
        100.0 * recall,
        100.0 * fp_rate
    );
    for c in &misses {
        println!("miss (line {}, {}): {:?}", c.line, c.category, c.value);
    }
    for (c, k) in &false_pos {
        println!(
            "false positive (line {}, {}): {:?} as {}",
            c.line,
            c.category,
            c.value,
            k.describe()
        );
    }
    assert!(pos >= 150 && neg >= 100, "corpus too small: {pos} / {neg}");
    assert!(recall >= 0.98, "recall {:.1}% < 98%", 100.0 * recall);
    assert!(
        fp_rate <= 0.01,
        "false positives {:.1}% > 1%",
        100.0 * fp_rate
    );
}

/// Letters and digits of `s`, for "nothing of the value is left" checks.
fn alnum(s: &str) -> String {
    s.chars().filter(|c| c.is_alphanumeric()).collect()
}

#[test]
fn redaction_removes_what_was_found() {
    for c in corpus().iter().filter(|c| c.positive) {
        let text = normalize::for_scan(&c.value);
        let spans = pii::find_all(&c.value);
        let red = pii::redact(&c.value).unwrap_or_default();
        assert!(!spans.is_empty(), "line {}: nothing found", c.line);
        let red_alnum = alnum(&red);
        for (r, k) in &spans {
            let found = &text[r.clone()];
            let core = alnum(found);
            assert!(
                core.len() < 6 || !red_alnum.contains(&core),
                "line {}: the {} is still in the redacted text",
                c.line,
                k.describe()
            );
            assert!(!red.contains(found), "line {}: span survived", c.line);
        }
        assert_eq!(
            pii::first(&red),
            None,
            "line {}: the redacted text still looks like personal data",
            c.line
        );
    }
}

#[test]
fn negatives_come_back_unchanged() {
    for c in corpus().iter().filter(|c| !c.positive) {
        if pii::first(&c.value).is_none() {
            assert_eq!(pii::redact(&c.value), None, "line {}", c.line);
            assert!(pii::find_all(&c.value).is_empty(), "line {}", c.line);
        }
    }
}

/// Pieces that put detectors near their edges, mixed with arbitrary text.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9 .:+()/-]{0,40}",
        "[0-9a-fA-F:.%\\]\\[]{0,40}",
        "[a-zA-Z0-9@._%+-]{0,30}",
        "[A-Za-z0-9_=.:\"' -]{0,40}",
        Just("-----BEGIN RSA PRIVATE KEY-----".to_owned()),
        Just("Basic ".to_owned()),
        Just("password=".to_owned()),
        Just("%".to_owned()),
        Just("%E2%80".to_owned()),
        Just("\u{200b}".to_owned()),
        Just("＠".to_owned()),
        Just("e\u{301}".to_owned()),
        Just("eyJhbGciOiJIUzI1NiJ9.".to_owned()),
        Just("GB82 ".to_owned()),
        Just("ip-10-1-2-3.".to_owned()),
        Just("&#64;".to_owned()),
        Just("&amp;#x40;".to_owned()),
        Just("&#".to_owned()),
        Just("\\u0040".to_owned()),
        Just("\\uD83D\\uDE00".to_owned()),
        Just("\\u{".to_owned()),
        Just("%2540".to_owned()),
        Just("%25".to_owned()),
        Just("%u0040".to_owned()),
        Just(" [at] ".to_owned()),
        Just("(dot)".to_owned()),
        Just("\u{664}\u{661}\u{661}\u{661}".to_owned()),
        Just("ssn ".to_owned()),
        Just("password is ".to_owned()),
        Just("4111_1111_".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_and_agrees(parts in proptest::collection::vec(fragment(), 0..6)) {
        let s: String = parts.concat();
        let first = pii::first(&s);
        let red = pii::redact(&s);
        let spans = pii::find_all(&s);
        let text = normalize::for_scan(&s);
        let _ = normalize::identifier(&s, true);
        let _ = normalize::identifier(&s, false);
        prop_assert_eq!(first.is_some(), red.is_some());
        prop_assert_eq!(first.is_some(), !spans.is_empty());
        let mut at = 0;
        for (r, _) in &spans {
            prop_assert!(r.start >= at && r.start < r.end && r.end <= text.len());
            prop_assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end));
            at = r.end;
        }
    }

    #[test]
    fn identifier_is_idempotent(s in any::<String>()) {
        let once = normalize::identifier(&s, true).into_owned();
        prop_assert_eq!(normalize::identifier(&once, true), once.as_str());
    }
}
