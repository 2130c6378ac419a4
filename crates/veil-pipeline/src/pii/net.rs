//! Addresses: email (quoted and non-Latin local parts, internationalized domains), IPv4
//! (also at a sentence's end, glued to letters, or spelled as a cloud host name), IPv6
//! (after a label, before a `:port`), and MAC addresses.

use super::{emit, is_word_at, is_word_before, Hit, PiiKind, Pre};
use regex::Regex;
use std::net::Ipv6Addr;
use std::sync::LazyLock;

pub(super) fn find(t: &str, p: &Pre, hit: &mut Hit<'_>) -> bool {
    (!p.at || email(t, hit))
        && (p.digits < 4 || p.dots < 3 || ipv4(t, hit))
        && (p.digits < 4 || p.dashes < 3 || cloud_ipv4(t, hit))
        && (p.colons < 2 || ipv6(t, hit))
        && (!(p.colons >= 5 || p.dashes >= 5 || p.dots >= 2) || t.len() < 14 || mac(t, hit))
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    // Local part: quoted, or atoms of letters (any script), digits and RFC 5322 specials
    // but '=' (so `email=bob@…` keeps its name).
    // Domain: labels of letters (any script), digits and '-', separated by '.' or the
    // ideographic full stop; the top level is letters or an `xn--` punycode label.
    Regex::new(
        r#"(?:"[^"\r\n]{1,64}"|[\p{L}\p{M}\p{N}!#$%&'*+/?^_`{|}~-]+(?:\.[\p{L}\p{M}\p{N}!#$%&'*+/?^_`{|}~-]+)*)@(?:[\p{L}\p{M}\p{N}](?:[\p{L}\p{M}\p{N}-]{0,61}[\p{L}\p{M}\p{N}])?[.。])+(?:[\p{L}\p{M}]{2,63}|(?i:xn--)[A-Za-z0-9-]{1,59})"#,
    )
    .expect("static email pattern compiles")
});

/// File extensions that look like a top-level domain in asset names (`icon@2x.png`).
const NOT_TLD: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "css", "js", "mjs", "json", "html",
    "htm", "txt", "log", "map", "woff", "woff2", "ttf", "otf", "tsx", "jsx",
];

fn email(t: &str, hit: &mut Hit<'_>) -> bool {
    for m in EMAIL.find_iter(t) {
        let s = m.as_str();
        let tld = s.rsplit(['.', '。']).next().unwrap_or("");
        if NOT_TLD.iter().any(|x| tld.eq_ignore_ascii_case(x)) {
            continue;
        }
        emit!(hit, m.range(), PiiKind::Email);
    }
    true
}

/// A decimal octet without leading zeros.
fn octet(b: &[u8]) -> Option<u8> {
    if b.is_empty() || b.len() > 3 || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    u8::try_from(v).ok()
}

/// Four octets that name a host, not a version: the first is not 0, and not all four are
/// single digits (`1.2.3.4`, `4.2.1.0` are versions far more often than addresses).
fn host_octets(parts: &[&[u8]]) -> bool {
    parts.len() == 4
        && parts.iter().all(|p| octet(p).is_some())
        && parts[0] != b"0"
        && parts.iter().any(|p| p.len() > 1)
}

/// The word before `i` (skipping a few spaces, quotes, ':' and '=') says "version".
fn after_version_word(b: &[u8], i: usize) -> bool {
    let mut j = i;
    let mut skipped = 0;
    while j > 0 && skipped < 3 && matches!(b[j - 1], b' ' | b':' | b'=' | b'"' | b'\'' | b'/') {
        j -= 1;
        skipped += 1;
    }
    let end = j;
    while j > 0 && (b[j - 1].is_ascii_alphabetic() || b[j - 1] == b'_') {
        j -= 1;
    }
    let w = &b[j..end];
    let ends = |suffix: &[u8]| {
        w.len() >= suffix.len() && w[w.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    (skipped == 0 && (w.eq_ignore_ascii_case(b"v") || ends(b"_v")))
        || ends(b"version")
        || ends(b"ver")
        || ends(b"build")
        || ends(b"release")
        || w.eq_ignore_ascii_case(b"rev")
        || w.eq_ignore_ascii_case(b"fw")
        || ends(b"firmware")
}

/// Dotted quads: maximal runs of digits and dots with exactly four parts once a sentence's
/// final dot is dropped; letters around them do not matter (`ip203.0.113.9`), a fifth part
/// does (`1.3.6.1.4` is an OID, not an address).
fn ipv4(t: &str, hit: &mut Hit<'_>) -> bool {
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let s = i;
        let mut e = i;
        while e < b.len() && (b[e].is_ascii_digit() || b[e] == b'.') {
            e += 1;
        }
        i = e;
        // A sentence's final dot is not a fifth part.
        while e > s && b[e - 1] == b'.' {
            e -= 1;
        }
        let parts: smallvec::SmallVec<[&[u8]; 6]> = b[s..e].split(|&c| c == b'.').collect();
        if !host_octets(&parts) || after_version_word(b, s) {
            continue;
        }
        emit!(hit, s..e, PiiKind::Ipv4);
    }
    true
}

static CLOUD_HOST: LazyLock<Regex> = LazyLock::new(|| {
    // `ip-10-1-2-3.ec2.internal`, `ec2-203-0-113-9.compute-1.amazonaws.com`, or a dashed
    // quad as the first label of a host name (`203-0-113-9.static.example.net`).
    Regex::new(
        r"(?i)(?-u:\b)(?:(?:ip|ec2|ipv4|host|node|vm|server)-((?:[0-9]{1,3}-){3}[0-9]{1,3})(?-u:\b)|((?:[0-9]{1,3}-){3}[0-9]{1,3})\.[a-z])",
    )
    .expect("static cloud host pattern compiles")
});

fn cloud_ipv4(t: &str, hit: &mut Hit<'_>) -> bool {
    let b = t.as_bytes();
    for c in CLOUD_HOST.captures_iter(t) {
        let (range, quad) = match (c.get(1), c.get(2)) {
            (Some(q), _) => (c.get(0).map_or(q.range(), |m| m.range()), q),
            (None, Some(q)) => {
                // The quad must be the whole first label, not the tail of a longer one.
                if q.start() > 0 && matches!(b[q.start() - 1], b'-' | b'.' | b'0'..=b'9') {
                    continue;
                }
                (q.range(), q)
            }
            _ => continue,
        };
        let parts: smallvec::SmallVec<[&[u8]; 4]> =
            quad.as_str().as_bytes().split(|&c| c == b'-').collect();
        if parts.len() == 4 && parts.iter().all(|p| octet(p).is_some()) && parts[0] != b"0" {
            emit!(hit, range, PiiKind::Ipv4);
        }
    }
    true
}

fn is_v6_byte(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b':' || c == b'.'
}

/// A real address, not `::1` or `a::b` in code: at least four hex digits, and a group of
/// three or more or at least three groups.
fn substantial_v6(s: &str) -> bool {
    let groups = s.split(':').filter(|g| !g.is_empty());
    let (mut n, mut long, mut hex) = (0, false, 0);
    for g in groups {
        n += 1;
        long |= g.len() >= 3;
        hex += g.bytes().filter(u8::is_ascii_hexdigit).count();
    }
    hex >= 4 && (long || n >= 3)
}

/// Runs of hex digits, ':' and '.' with two colons or more that parse as an address once a
/// label's ':' before, a sentence's '.' or a port's ':' after is set aside.
fn ipv6(t: &str, hit: &mut Hit<'_>) -> bool {
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !is_v6_byte(b[i]) {
            i += 1;
            continue;
        }
        let run_start = i;
        let mut e = i;
        let mut colons = 0;
        while e < b.len() && is_v6_byte(b[e]) {
            colons += (b[e] == b':') as usize;
            e += 1;
        }
        i = e;
        if colons < 2 {
            continue;
        }
        let mut s = run_start;
        // Glued to a word on the right (`Db::Cache`): code, not an address.
        if is_word_at(b, e) {
            continue;
        }
        while e > s && b[e - 1] == b'.' {
            e -= 1;
        }
        if e - s >= 2 && b[e - 1] == b':' && b[e - 2] != b':' {
            e -= 1;
        }
        if e - s >= 2 && b[s] == b':' && b[s + 1] != b':' {
            s += 1;
        }
        let mut found = None;
        if !is_word_before(b, s) || b[s] == b':' {
            found = parse_v6(t, s, e);
        }
        if found.is_none() {
            // A hex label glued before it (`dead:2001:db8::1`, `ad:fe80::1`): drop it.
            if let Some(c) = t[s..e].find(':') {
                let s2 = s + c + 1;
                if s2 < e && b[s2] != b':' {
                    found = parse_v6(t, s2, e);
                }
            }
        }
        if let Some(r) = found {
            emit!(hit, r, PiiKind::Ipv6);
        }
    }
    true
}

fn parse_v6(t: &str, s: usize, e: usize) -> Option<std::ops::Range<usize>> {
    let c = t.get(s..e)?;
    (c.parse::<Ipv6Addr>().is_ok() && substantial_v6(c)).then_some(s..e)
}

static MAC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?-u:\b)(?:[0-9a-f]{2}(?::[0-9a-f]{2}){5}|[0-9a-f]{2}(?:-[0-9a-f]{2}){5}|[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4})(?-u:\b)",
    )
    .expect("static MAC pattern compiles")
});

/// Six hex pairs joined by ':' or '-', or Cisco's three dotted quads of hex, not part of
/// a longer run of the same shape (a key fingerprint, an EUI-64 or a version).
fn mac(t: &str, hit: &mut Hit<'_>) -> bool {
    let b = t.as_bytes();
    for m in MAC.find_iter(t) {
        let (s, e) = (m.start(), m.end());
        let sep = b[s + 2];
        let sep = if sep == b':' || sep == b'-' {
            sep
        } else {
            b'.'
        };
        // Continues with the same separator and more hex: part of something longer.
        if b.get(e) == Some(&sep) && b.get(e + 1).is_some_and(u8::is_ascii_hexdigit) {
            continue;
        }
        if s >= 2 && b[s - 1] == sep && b[s - 2].is_ascii_alphanumeric() {
            // Something of the same shape before it: a pair of its own unless that pair
            // is the tail of a word (`mac:00:1a:…`).
            let pair = s >= 3 && b[s - 3].is_ascii_hexdigit() && b[s - 2].is_ascii_hexdigit();
            let genuine = pair && (s == 3 || !is_word_at(b, s - 4));
            if sep == b'.' || genuine {
                continue;
            }
        }
        if sep == b'.' && !m.as_str().bytes().any(|c| c.is_ascii_alphabetic()) {
            // All-digit dotted quads of four are build numbers far more often.
            continue;
        }
        emit!(hit, s..e, PiiKind::MacAddress);
    }
    true
}
