//! Addresses: email (quoted and non-Latin local parts, internationalized domains), IPv4
//! (also at a sentence's end, glued to letters, or spelled as a cloud host name), IPv6
//! (after a label, before a `:port`), and MAC addresses.

use super::{emit, is_word_at, is_word_before, Hit, PiiKind, Pre};
use std::net::Ipv6Addr;

pub(super) fn find(t: &str, p: &Pre, hit: &mut Hit<'_>) -> bool {
    (!p.at || email(t, hit))
        && (p.digits < 4 || p.dots < 3 || ipv4(t, hit))
        && (p.digits < 4 || p.dashes < 3 || cloud_ipv4(t, hit))
        && (p.colons < 2 || ipv6(t, hit))
        && (!(p.colons >= 5 || p.dashes >= 5 || p.dots >= 2) || t.len() < 14 || mac(t, hit))
}

/// File extensions that look like a top-level domain in asset names (`icon@2x.png`).
const NOT_TLD: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "css", "js", "mjs", "json", "html",
    "htm", "txt", "log", "map", "woff", "woff2", "ttf", "otf", "tsx", "jsx",
];

/// A letter or digit of any script, or a combining mark (Devanagari vowel signs, …).
fn is_label_char(c: char) -> bool {
    c.is_alphanumeric() || unicode_normalization::char::is_combining_mark(c)
}

/// RFC 5322 atom characters of a local part, any script; not '=' (so `email=bob@…` keeps
/// its name) and not '.', which separates atoms.
fn is_atom_char(c: char) -> bool {
    is_label_char(c) || "!#$%&'*+/?^_`{|}~-".contains(c)
}

/// Where the local part before the '@' at `at` starts: a quoted string, or dot-separated
/// atoms of letters (any script), digits and specials.
fn local_start(t: &str, at: usize) -> Option<usize> {
    let head = &t[..at];
    if let Some(inner) = head.strip_suffix('"') {
        // A quoted local part is at most 64 bytes: look no further back than that.
        let from = inner.len().saturating_sub(65);
        let q = from + inner.as_bytes()[from..].iter().rposition(|&c| c == b'"')?;
        let quoted = &inner[q + 1..];
        let ok = !quoted.is_empty() && quoted.len() <= 64 && !quoted.contains(['\r', '\n']);
        return ok.then_some(q);
    }
    let mut start = at;
    for (i, c) in head.char_indices().rev() {
        if is_atom_char(c) || c == '.' {
            start = i;
        } else {
            break;
        }
    }
    // A local part neither starts nor ends with '.'.
    while t[start..at].starts_with('.') {
        start += 1;
    }
    (start < at && !head.ends_with('.')).then_some(start)
}

/// Where the domain after the '@' at `at` ends: labels of letters (any script), digits and
/// inner '-', separated by '.' or '。', the last one a top-level domain of letters or an
/// `xn--` label. The longest such domain wins.
fn domain_end(t: &str, at: usize) -> Option<usize> {
    let mut end = None;
    let mut labels = 0;
    let mut label_start = at + 1;
    let mut chars = t[at + 1..]
        .char_indices()
        .map(|(i, c)| (at + 1 + i, c))
        .peekable();
    loop {
        // One label.
        let mut label_end = label_start;
        let mut n = 0;
        while let Some(&(i, c)) = chars.peek() {
            if is_label_char(c) || c == '-' {
                label_end = i + c.len_utf8();
                n += 1;
                chars.next();
            } else {
                break;
            }
        }
        let label = &t[label_start..label_end];
        if n == 0 || n > 63 || label.starts_with('-') || label.ends_with('-') {
            return end;
        }
        labels += 1;
        if labels >= 2 && is_tld(label) {
            end = Some(label_end);
        }
        match chars.peek() {
            Some(&(i, c @ ('.' | '。'))) => {
                chars.next();
                label_start = i + c.len_utf8();
            }
            _ => return end,
        }
    }
}

fn is_tld(label: &str) -> bool {
    let n = label.chars().count();
    let letters = (2..=63).contains(&n)
        && label
            .chars()
            .all(|c| c.is_alphabetic() || unicode_normalization::char::is_combining_mark(c));
    let puny = label.len() > 4
        && label.as_bytes()[..4].eq_ignore_ascii_case(b"xn--")
        && label
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-');
    (letters || puny) && !NOT_TLD.iter().any(|x| label.eq_ignore_ascii_case(x))
}

/// Around each '@': a local part before it and a domain after it.
fn email(t: &str, hit: &mut Hit<'_>) -> bool {
    let b = t.as_bytes();
    let mut from = 0;
    while let Some(at) = memchr::memchr(b'@', &b[from..]).map(|i| from + i) {
        from = at + 1;
        let Some(end) = domain_end(t, at) else {
            continue;
        };
        let Some(start) = local_start(t, at) else {
            continue;
        };
        emit!(hit, start..end, PiiKind::Email);
        from = end;
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

/// Labels that put a dashed quad in a cloud host name: `ip-10-1-2-3.ec2.internal`,
/// `ec2-203-0-113-9.compute-1.amazonaws.com`.
const HOST_PREFIXES: &[&[u8]] = &[b"ip", b"ec2", b"ipv4", b"host", b"node", b"vm", b"server"];

/// Dashed quads: after a host prefix (`ip-…`), or as a host name's whole first label
/// (`203-0-113-9.static.example.net`).
fn cloud_ipv4(t: &str, hit: &mut Hit<'_>) -> bool {
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || is_word_before(b, i) {
            // Digits inside a word (`ec2`, `a716`) start no quad.
            i += 1;
            continue;
        }
        let s = i;
        let mut e = i;
        while e < b.len() && (b[e].is_ascii_digit() || b[e] == b'-') {
            e += 1;
        }
        i = e;
        while e > s && b[e - 1] == b'-' {
            e -= 1;
        }
        if memchr::memchr_iter(b'-', &b[s..e]).count() != 3 {
            continue;
        }
        let parts: smallvec::SmallVec<[&[u8]; 4]> = b[s..e].split(|&c| c == b'-').collect();
        if parts.len() != 4 || !parts.iter().all(|p| octet(p).is_some()) || parts[0] == b"0" {
            continue;
        }
        if s >= 2 && b[s - 1] == b'-' {
            let mut w = s - 1;
            while w > 0 && b[w - 1].is_ascii_alphanumeric() {
                w -= 1;
            }
            let word = &b[w..s - 1];
            let glued = w > 0 && matches!(b[w - 1], b'-' | b'_');
            if !glued && HOST_PREFIXES.iter().any(|p| word.eq_ignore_ascii_case(p)) {
                emit!(hit, w..e, PiiKind::Ipv4);
            }
            continue;
        }
        let first_label = !(s > 0
            && (b[s - 1].is_ascii_alphanumeric() || matches!(b[s - 1], b'.' | b'_')))
            && b.get(e) == Some(&b'.')
            && b.get(e + 1).is_some_and(u8::is_ascii_alphabetic);
        if first_label {
            emit!(hit, s..e, PiiKind::Ipv4);
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
    // Without "::" an address spells all eight groups (six before an IPv4 tail), so
    // `10:30:00` is refused before the parser runs.
    let colons = memchr::memchr_iter(b':', c.as_bytes()).count();
    if colons < 6 && memchr::memmem::find(c.as_bytes(), b"::").is_none() {
        return None;
    }
    (c.parse::<Ipv6Addr>().is_ok() && substantial_v6(c)).then_some(s..e)
}

/// Six hex pairs with one separator throughout: `00:1a:2b:3c:4d:5e`.
fn is_mac_pairs(w: &[u8], sep: u8) -> bool {
    w.len() == 17
        && w.iter().enumerate().all(|(k, &c)| {
            if k % 3 == 2 {
                c == sep
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Cisco's three dotted groups of four hex digits, one of them a letter: `0050.56ab.cdef`.
fn is_cisco(w: &[u8]) -> bool {
    w.len() == 14
        && w.iter().enumerate().all(|(k, &c)| {
            if k % 5 == 4 {
                c == b'.'
            } else {
                c.is_ascii_hexdigit()
            }
        })
        && w.iter().any(u8::is_ascii_alphabetic)
}

/// Six hex pairs joined by ':' or '-', or Cisco's dotted form, not part of a longer run of
/// the same shape (a key fingerprint, an EUI-64, a build number).
fn mac(t: &str, hit: &mut Hit<'_>) -> bool {
    let b = t.as_bytes();
    let mut i = 0;
    while i + 14 <= b.len() {
        if is_word_before(b, i) {
            i += 1;
            continue;
        }
        let sep = b.get(i + 2).copied().unwrap_or(0);
        if (sep == b':' || sep == b'-') && i + 17 <= b.len() && is_mac_pairs(&b[i..i + 17], sep) {
            let e = i + 17;
            let more_after =
                b.get(e) == Some(&sep) && b.get(e + 1).is_some_and(u8::is_ascii_hexdigit);
            // A pair of its own before it, unless that pair is the tail of a word (`mac:`).
            let pair_before = i >= 3
                && b[i - 1] == sep
                && b[i - 2].is_ascii_hexdigit()
                && b[i - 3].is_ascii_hexdigit()
                && (i == 3 || !is_word_at(b, i - 4));
            if !more_after && !pair_before && !is_word_at(b, e) {
                emit!(hit, i..e, PiiKind::MacAddress);
                i = e;
                continue;
            }
        } else if b[i + 4] == b'.' && is_cisco(&b[i..i + 14]) {
            let e = i + 14;
            let dotted_before = i >= 2 && b[i - 1] == b'.' && b[i - 2].is_ascii_alphanumeric();
            let dotted_after = b.get(e) == Some(&b'.') && is_word_at(b, e + 1);
            if !dotted_before && !dotted_after && !is_word_at(b, e) {
                emit!(hit, i..e, PiiKind::MacAddress);
                i = e;
                continue;
            }
        }
        i += 1;
    }
    true
}
