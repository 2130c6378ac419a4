//! The PII scanner: finds values that look like personal data or secrets inside strings
//! the policy lets through (email, IPv4/IPv6, phone numbers, payment cards with a Luhn
//! check, JWTs, bearer tokens, common API-key shapes).
//!
//! A one-pass byte prefilter decides which detectors can possibly match, so ordinary
//! values ("payments", "4.2.1") cost a few nanoseconds and no regex runs.

use regex::Regex;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::LazyLock;

/// What a detector found; named in messages instead of the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PiiKind {
    Email,
    Ipv4,
    Ipv6,
    Phone,
    PaymentCard,
    Jwt,
    BearerToken,
    ApiKey,
}

impl PiiKind {
    /// A phrase for messages ("an email address").
    pub fn describe(self) -> &'static str {
        match self {
            PiiKind::Email => "an email address",
            PiiKind::Ipv4 => "an IPv4 address",
            PiiKind::Ipv6 => "an IPv6 address",
            PiiKind::Phone => "a phone number",
            PiiKind::PaymentCard => "a payment card number",
            PiiKind::Jwt => "a JSON web token",
            PiiKind::BearerToken => "a bearer token",
            PiiKind::ApiKey => "an API key",
        }
    }
    /// The placeholder a redacted span becomes.
    pub fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Email => "[email]",
            PiiKind::Ipv4 | PiiKind::Ipv6 => "[ip]",
            PiiKind::Phone => "[phone]",
            PiiKind::PaymentCard => "[card]",
            PiiKind::Jwt => "[jwt]",
            PiiKind::BearerToken => "[token]",
            PiiKind::ApiKey => "[api-key]",
        }
    }
}

struct Detectors {
    email: Regex,
    ipv4: Regex,
    ipv6: Regex,
    phone: Regex,
    card: Regex,
    jwt: Regex,
    bearer: Regex,
    api_key: Regex,
}

static D: LazyLock<Detectors> = LazyLock::new(|| {
    let r = |s: &str| Regex::new(s).expect("static PII pattern compiles");
    Detectors {
        email: r(r"(?i)[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}"),
        ipv4: r(
            r"(?:^|[^0-9A-Za-z.])((?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]))(?:$|[^0-9A-Za-z.])",
        ),
        ipv6: r(r"(?i)[0-9a-f:]*:[0-9a-f:]*:[0-9a-f:.]*"),
        phone: r(r"\+[0-9][0-9 \-().]{6,20}[0-9]|\(?[0-9]{3}\)?[ .\-][0-9]{3}[ .\-][0-9]{4}"),
        card: r(r"[0-9](?:[ \-]?[0-9]){12,18}"),
        jwt: r(r"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"),
        bearer: r(r"(?i)bearer\s+[A-Za-z0-9\-._~+/]{8,}=*"),
        api_key: r(
            r"(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|xox[abprs]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z_\-]{35}|glpat-[A-Za-z0-9_\-]{20,}",
        ),
    }
});

/// Which detector families the bytes could possibly trigger.
#[derive(Default)]
struct Pre {
    at: bool,
    digits: usize,
    colons: usize,
    dots: usize,
    letters_digits_run: usize,
}

fn prefilter(s: &[u8]) -> Pre {
    let mut p = Pre::default();
    let mut run = 0usize;
    for &b in s {
        match b {
            b'0'..=b'9' => {
                p.digits += 1;
                run += 1;
            }
            b'@' => {
                p.at = true;
                run = 0;
            }
            b':' => {
                p.colons += 1;
                run = 0;
            }
            b'.' => {
                p.dots += 1;
                run = 0;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'-' => run += 1,
            _ => run = 0,
        }
        p.letters_digits_run = p.letters_digits_run.max(run);
    }
    p
}

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = (d - b'0') as u32;
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Every span that looks like personal data or a secret, in order, non-overlapping.
pub fn find_all(s: &str) -> Vec<(Range<usize>, PiiKind)> {
    let mut out = Vec::new();
    scan(s, &mut |r, k| {
        out.push((r, k));
        true
    });
    out.sort_by_key(|(r, _)| (r.start, std::cmp::Reverse(r.end)));
    let mut merged: Vec<(Range<usize>, PiiKind)> = Vec::new();
    for (r, k) in out {
        match merged.last_mut() {
            Some((last, _)) if r.start < last.end => last.end = last.end.max(r.end),
            _ => merged.push((r, k)),
        }
    }
    merged
}

/// The first kind of personal data found, if any: the cheap check for reject policies.
pub fn first(s: &str) -> Option<PiiKind> {
    let mut found = None;
    scan(s, &mut |_, k| {
        found = Some(k);
        false
    });
    found
}

/// Replaces every detected span by its placeholder; `None` when nothing was found.
pub fn redact(s: &str) -> Option<String> {
    let spans = find_all(s);
    if spans.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (r, k) in spans {
        out.push_str(&s[at..r.start]);
        out.push_str(k.placeholder());
        at = r.end;
    }
    out.push_str(&s[at..]);
    Some(out)
}

/// Runs the detectors the prefilter allows; `hit` returns false to stop early.
fn scan(s: &str, hit: &mut dyn FnMut(Range<usize>, PiiKind) -> bool) {
    let p = prefilter(s.as_bytes());
    let d = &*D;
    macro_rules! each {
        ($re:expr, $kind:expr, $check:expr) => {
            for m in $re.find_iter(s) {
                #[allow(clippy::redundant_closure_call)]
                if let Some(r) = ($check)(m) {
                    if !hit(r, $kind) {
                        return;
                    }
                }
            }
        };
    }
    if p.at {
        each!(d.email, PiiKind::Email, |m: regex::Match| Some(m.range()));
    }
    if p.digits >= 4 && p.dots >= 3 {
        for c in d.ipv4.captures_iter(s) {
            if let Some(m) = c.get(1) {
                if m.as_str().parse::<Ipv4Addr>().is_ok() && !hit(m.range(), PiiKind::Ipv4) {
                    return;
                }
            }
        }
    }
    if p.colons >= 2 {
        each!(d.ipv6, PiiKind::Ipv6, |m: regex::Match| {
            let t = m.as_str().trim_end_matches('.');
            (t.len() >= 3 && t.parse::<Ipv6Addr>().is_ok()).then(|| m.start()..m.start() + t.len())
        });
    }
    if p.digits >= 10 {
        each!(d.phone, PiiKind::Phone, |m: regex::Match| {
            let n = m.as_str().bytes().filter(u8::is_ascii_digit).count();
            (8..=15).contains(&n).then(|| m.range())
        });
    }
    if p.digits >= 13 {
        each!(d.card, PiiKind::PaymentCard, |m: regex::Match| {
            let digits: Vec<u8> = m.as_str().bytes().filter(u8::is_ascii_digit).collect();
            ((13..=19).contains(&digits.len()) && luhn(&digits)).then(|| m.range())
        });
    }
    if p.letters_digits_run >= 8
        && p.dots >= 2
        && memchr::memmem::find(s.as_bytes(), b"eyJ").is_some()
    {
        each!(d.jwt, PiiKind::Jwt, |m: regex::Match| Some(m.range()));
    }
    if p.letters_digits_run >= 8
        && (memchr::memmem::find(s.as_bytes(), b"earer").is_some()
            || memchr::memmem::find(s.as_bytes(), b"EARER").is_some())
    {
        each!(d.bearer, PiiKind::BearerToken, |m: regex::Match| Some(
            m.range()
        ));
    }
    if p.letters_digits_run >= 16 {
        each!(d.api_key, PiiKind::ApiKey, |m: regex::Match| Some(
            m.range()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_kind() {
        let cases = [
            ("mail alice.smith+x@example.co.uk now", PiiKind::Email),
            ("from 203.0.113.42 ok", PiiKind::Ipv4),
            ("peer 2001:db8::8a2e:370:7334", PiiKind::Ipv6),
            ("call +44 20 7946 0958", PiiKind::Phone),
            ("call (415) 555-0132", PiiKind::Phone),
            ("card 4111 1111 1111 1111", PiiKind::PaymentCard),
            ("t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", PiiKind::Jwt),
            ("Authorization: Bearer abcdef0123456789xyz", PiiKind::BearerToken),
            ("key sk_live_4eC39HqLyjWDarjtT1zdp7dc", PiiKind::ApiKey),
            ("AKIAIOSFODNN7EXAMPLE", PiiKind::ApiKey),
            ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", PiiKind::ApiKey),
        ];
        for (s, k) in cases {
            assert_eq!(
                find_all(s).iter().map(|(_, k)| *k).collect::<Vec<_>>(),
                vec![k],
                "{s}"
            );
        }
    }

    #[test]
    fn ordinary_values_pass() {
        for s in [
            "payments",
            "4.2.1",
            "2026-11-20",
            "10:30:00",
            "E_TIMEOUT",
            "build 1234 failed after 12:04",
            "4111 1111 1111 1112",
            "v1.2.3.4-beta",
        ] {
            assert_eq!(first(s), None, "{s}");
        }
    }

    #[test]
    fn redact_replaces_spans_only() {
        assert_eq!(
            redact("user bob@example.com at 10.0.0.1 failed").unwrap(),
            "user [email] at [ip] failed"
        );
        assert_eq!(redact("nothing here"), None);
    }
}
