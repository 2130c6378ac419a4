//! Every way a policy file can fail to parse comes back as `PolicyError::Parse` with the
//! 1-based line and column of the offending spot and a message without a location suffix;
//! duplicate keys are refused, and hostile YAML (alias bombs, deep nesting) fails fast.

use std::time::{Duration, Instant};
use veil_policy::raw::RawGeneralize;
use veil_policy::{parse, PolicyError};

/// (line, column, message) of the parse error; panics if the text parses.
fn parse_err(text: &str) -> (usize, usize, String) {
    match parse(text, "p.yaml") {
        Err(PolicyError::Parse {
            file,
            line,
            column,
            message,
        }) => {
            assert_eq!(file, "p.yaml");
            assert!(
                !message.contains(" at line") && !message.contains("column"),
                "the location is given once, in front: {message}"
            );
            (line, column, message)
        }
        Err(other) => panic!("expected a parse error, got {other:?}"),
        Ok(_) => panic!("expected a parse error, but it parsed:\n{text}"),
    }
}

#[test]
fn an_unknown_key_is_located_at_the_key() {
    let text = "\
version: 1
organization: Fixture Corp
collections:
  - name: ci.build
    owner: platform
    retension: 14d
    fields:
      team: { type: string, class: quasi_identifier }
";
    let (line, column, message) = parse_err(text);
    assert_eq!((line, column), (6, 5), "{message}");
    assert!(
        message.starts_with("unknown field `retension`, expected one of name, purpose"),
        "{message}"
    );
}

#[test]
fn an_unknown_key_inside_a_flow_mapping_is_located_at_the_key() {
    let text = "\
version: 1
organization: Fixture Corp
collections:
  - name: ci.build
    fields:
      team: { type: string, class: quasi_identifier, lenght: 3 }
";
    let (line, column, message) = parse_err(text);
    assert_eq!((line, column), (6, 54), "{message}");
    assert!(message.starts_with("unknown field `lenght`"), "{message}");
}

#[test]
fn the_full_error_reads_file_line_column_message() {
    let e = parse("version: 1\norganization: X\nbogus: 1\n", "policy.yaml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "policy.yaml:3:1: unknown field `bogus`, expected one of version, organization, team_map, defaults, collections"
    );
}

#[test]
fn a_wrong_type_is_located_at_the_value_and_names_what_was_written() {
    let (line, column, message) = parse_err("version: one\norganization: X\ncollections: []\n");
    assert_eq!((line, column), (1, 10), "{message}");
    assert_eq!(message, "expected u32, found `one`");

    let text = "\
version: 1
organization: Fixture Corp
collections:
  - name: ci.build
    fields:
      size: { type: integer, class: measure, min: 0, max: lots }
";
    let (line, column, message) = parse_err(text);
    assert_eq!((line, column), (6, 59), "{message}");
    assert_eq!(message, "expected floating point, found `lots`");

    // A negative number where a count is expected.
    let (line, column, message) = parse_err(
        "version: 1\norganization: X\ndefaults: { min_group_size: -5 }\ncollections: []\n",
    );
    assert_eq!((line, column), (3, 29), "{message}");
    assert_eq!(message, "expected u32, found `-5`");
}

#[test]
fn a_yaml_1_1_boolean_is_refused() {
    // YAML 1.2: only true/false are booleans; `yes` would otherwise be read as true.
    let text = "\
version: 1
organization: Fixture Corp
collections:
  - name: ci.build
    fields:
      team: { type: string, class: quasi_identifier, required: yes }
";
    let (line, column, message) = parse_err(text);
    assert_eq!((line, column), (6, 64), "{message}");
    assert!(message.contains("boolean"), "{message}");
}

#[test]
fn a_missing_required_key_is_located_in_the_mapping_that_lacks_it() {
    // The parser notices the gap when the mapping ends, and points at its last key.
    let text = "\
version: 1
organization: Fixture Corp
collections:
  - name: ci.build
    fields:
      team:
        type: string
        values: [a, b]
";
    let (line, column, message) = parse_err(text);
    assert_eq!((line, column), (8, 9), "{message}");
    assert_eq!(message, "missing field `class`");

    let (line, column, message) = parse_err("version: 1\ncollections: []\n");
    assert_eq!((line, column), (2, 1), "{message}");
    assert_eq!(message, "missing field `organization`");
}

#[test]
fn a_syntax_error_is_located() {
    // An unclosed flow sequence: located at its opening bracket.
    let (line, column, message) = parse_err("version: 1\norganization: X\ncollections: [\n");
    assert_eq!((line, column), (3, 14), "{message}");
    assert!(message.contains("unclosed bracket"), "{message}");

    // A key indented under a scalar.
    let (line, column, message) =
        parse_err("version: 1\norganization: X\n  owner: y\ncollections: []\n");
    assert_eq!((line, column), (3, 8), "{message}");
    assert!(
        message.contains("mapping values are not allowed"),
        "{message}"
    );

    // The fixture the CLI's lint test uses.
    let text = include_str!("../../veil-cli/tests/fixtures/lint/bad_yaml.yaml");
    let (line, column, message) = parse_err(text);
    assert_eq!((line, column), (2, 14), "{message}");
}

#[test]
fn a_duplicate_field_is_refused_not_silently_merged() {
    let text = "\
version: 1
organization: Fixture Corp
collections:
  - name: ci.build
    fields:
      team: { type: string, class: quasi_identifier, values: [a, b] }
      size: { type: integer, class: measure }
      team: { type: string, class: direct_identifier, transform: keep }
";
    let (line, column, message) = parse_err(text);
    assert_eq!((line, column), (8, 7), "{message}");
    assert_eq!(message, "duplicate mapping key `team` is not allowed here");
}

#[test]
fn a_duplicate_key_anywhere_is_refused() {
    let text = "\
version: 1
organization: Fixture Corp
collections: []
version: 2
";
    let (line, column, message) = parse_err(text);
    assert_eq!((line, column), (4, 1), "{message}");
    assert!(
        message.contains("duplicate mapping key `version`"),
        "{message}"
    );
}

/// A policy whose `generalize` parameters alias each other nine deep: expanded, the last
/// one alone is 9^9 (387 million) strings.
fn alias_bomb() -> String {
    let mut s = String::from(
        "version: 1\norganization: x\ncollections:\n  - name: c\n    fields:\n      f0: { type: number, class: measure, transform: generalize, generalize: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol] }\n",
    );
    for i in 1..9 {
        let p = i - 1;
        s.push_str(&format!(
            "      f{i}: {{ type: number, class: measure, transform: generalize, generalize: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}] }}\n"
        ));
    }
    s
}

#[test]
fn an_alias_bomb_is_refused_quickly() {
    let text = alias_bomb();
    let started = Instant::now();
    let (line, _, message) = parse_err(&text);
    let took = started.elapsed();
    assert!(message.contains("too large or too complex"), "{message}");
    assert!(message.contains("(its anchor is at "), "{message}");
    assert!((7..=14).contains(&line), "{line}: {message}");
    // The cap is a hundred thousand replayed events: a quarter second unoptimised, and
    // far from the minutes and gigabytes of the full expansion.
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn deep_nesting_is_refused() {
    // Flow style: [[[[…1…]]]].
    let depth = 100_000;
    let text = format!(
        "version: 1\norganization: x\ncollections:\n  - name: c\n    fields:\n      f: {{ type: number, class: measure, transform: generalize, generalize: {}1{} }}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let (line, _, message) = parse_err(&text);
    assert_eq!(line, 6, "{message}");
    assert!(message.contains("limit"), "{message}");

    // Block style: a sequence in a sequence in a sequence …, one level a line.
    let mut text = String::from(
        "version: 1\norganization: x\ncollections:\n  - name: c\n    fields:\n      f:\n        type: number\n        class: measure\n        generalize:\n",
    );
    for level in 0..1_000 {
        text.push_str(&" ".repeat(10 + 2 * level));
        text.push_str("-\n");
    }
    let (line, _, message) = parse_err(&text);
    assert!((10..=50).contains(&line), "{line}: {message}");
    assert!(
        message.contains("limit") || message.contains("deep"),
        "{message}"
    );
}

#[test]
fn generalize_takes_a_word_a_width_or_anything_for_the_compiler_to_refuse() {
    let text = "\
version: 1
organization: x
collections:
  - name: c
    fields:
      at: { type: timestamp, class: timestamp, transform: generalize, generalize: hour }
      ip: { type: ip, class: quasi_identifier, transform: generalize, generalize: network }
      n: { type: integer, class: measure, transform: generalize, generalize: 1000 }
      x: { type: number, class: measure, transform: generalize, generalize: 0.5 }
      odd: { type: number, class: measure, transform: generalize, generalize: true }
      quoted: { type: number, class: measure, transform: generalize, generalize: '5' }
";
    let raw = parse(text, "p.yaml").unwrap_or_else(|e| panic!("{e}"));
    let g = |name: &str| raw.collections[0].fields[name].generalize.clone();
    assert!(matches!(g("at"), Some(RawGeneralize::Name(s)) if s == "hour"));
    assert!(matches!(g("ip"), Some(RawGeneralize::Name(s)) if s == "network"));
    assert!(matches!(g("n"), Some(RawGeneralize::Width(w)) if w == 1000.0));
    assert!(matches!(g("x"), Some(RawGeneralize::Width(w)) if w == 0.5));
    assert!(matches!(g("odd"), Some(RawGeneralize::Other(_))));
    assert!(matches!(g("quoted"), Some(RawGeneralize::Name(s)) if s == "5"));

    // A misfit is a finding of the compile step, named by its field, not a parse error.
    let (_, findings) = veil_policy::analyze(
        &raw,
        "hash",
        chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        None,
    );
    for bad in ["odd", "quoted"] {
        assert!(
            findings.iter().any(|f| f.field.as_deref() == Some(bad)
                && f.message.contains("generalize needs a parameter")),
            "{bad}: {findings:#?}"
        );
    }
}
