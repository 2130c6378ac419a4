//! Addresses: email (quoted and non-Latin local parts, internationalized domains, `@` and
//! `.` spelled out, a person's address at a dotless internal domain), IPv4 (also at a
//! sentence's end, glued to letters, zero-padded, or spelled as a cloud host name), IPv6
//! (after a label, before a `:port`), and MAC addresses.

use super::{emit, find_ci, is_word_at, is_word_before, mask, starts_ci, Hit, PiiKind, Pre};
use std::net::Ipv6Addr;

pub(super) fn find(t: &str, p: &Pre, hit: &mut Hit<'_>) -> bool {
    let spelled = (p.at && (p.spaces > 0 || p.bracket))
        || (p.bracket && p.has_letters(mask(b"at")) && bracketed_at(t.as_bytes()));
    (!p.at || email(t, hit))
        && (!spelled || spelled_email(t, p.bracket, hit))
        && (p.digits < 4 || p.dots < 3 || ipv4(t, hit))
        && (p.digits < 4 || p.dashes < 3 || cloud_ipv4(t, hit))
        && (p.colons < 2 || ipv6(t, hit))
        && (!(p.colons >= 5 || p.dashes >= 5 || p.dots >= 2) || t.len() < 14 || mac(t, hit))
}

/// File extensions that look like a top-level domain in asset names (`icon@2x.png`), and
/// systemd's unit types (`getty@tty1.service`, `user@1000.service`).
const NOT_TLD: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "css", "js", "mjs", "json", "html",
    "htm", "txt", "log", "map", "woff", "woff2", "ttf", "otf", "tsx", "jsx", "service", "socket",
    "target", "mount", "timer", "slice", "scope", "swap", "device", "path",
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

/// Around each '@': a local part before it and a domain after it; or a person's local
/// part (see [`person_local`]) and a dotless internal domain (see [`dotless_end`]).
fn email(t: &str, hit: &mut Hit<'_>) -> bool {
    let b = t.as_bytes();
    let mut from = 0;
    while let Some(at) = memchr::memchr(b'@', &b[from..]).map(|i| from + i) {
        from = at + 1;
        let (end, dotless) = match domain_end(t, at) {
            Some(end) => (end, false),
            None => match dotless_end(t, at) {
                Some(end) => (end, true),
                None => continue,
            },
        };
        let Some(start) = local_start(t, at) else {
            continue;
        };
        if dotless && !person_local(&t[start..at]) {
            continue;
        }
        emit!(hit, start..end, PiiKind::Email);
        from = end;
    }
    true
}

/// Words after an '@' that name a version, a branch, a linker section or a locale's
/// modifier, not a domain: `lodash.merge@latest`, `memcpy@plt`, `sr_RS.UTF-8@latin`.
const NOT_DOTLESS: &[&str] = &[
    "latest", "next", "canary", "beta", "alpha", "rc", "stable", "nightly", "edge", "dev", "main",
    "master", "head", "tip", "plt", "got", "none", "null", "nil", "latin", "euro", "cyrillic",
];

/// A dotless internal domain after the '@' at `at` (`alice.smith@corp`): one word of
/// letters (any script, inner '-'), 2–63 of them, not all hex letters (`Object@deadbeef` is
/// a hash code), not a version tag or branch, and followed by the end, a space, closing
/// punctuation, or a ':' or '.' that ends a sentence — not by `.png`, `/`, `:22` or `@`.
fn dotless_end(t: &str, at: usize) -> Option<usize> {
    let mut end = at + 1;
    let mut n = 0;
    for (i, c) in t[at + 1..].char_indices() {
        if c.is_alphabetic() || (c == '-' && n > 0) {
            end = at + 1 + i + c.len_utf8();
            n += 1;
            if n > 63 {
                return None;
            }
        } else {
            break;
        }
    }
    let word = &t[at + 1..end];
    let b = t.as_bytes();
    let after_ok = match b.get(end) {
        None => true,
        Some(b':' | b'.') => b.get(end + 1).is_none_or(|c| c.is_ascii_whitespace()),
        Some(c) => c.is_ascii_whitespace() || b",;>)]}\"'!?".contains(c),
    };
    let hex = word.bytes().all(|c| matches!(c | 0x20, b'a'..=b'f'));
    let ok = n >= 2
        && after_ok
        && !word.ends_with('-')
        && !hex
        && !NOT_DOTLESS.iter().any(|w| word.eq_ignore_ascii_case(w));
    ok.then_some(end)
}

/// A person's local part: two or more dot-separated names, each letters (any script) with
/// inner `-`, `_` or `'` between letters, and digits only at its end (`alice.smith`,
/// `j.o'neil2`), so `v1.2`, `refs/heads/x.y`, `a+b` and `sr_RS.UTF-8` are not. A dotless
/// domain is flagged only after one: without the dot, `name@word` is as often
/// `pkg@latest`, `user@host` or `getty@tty1`.
fn person_local(local: &str) -> bool {
    let mut parts = 0;
    for part in local.split('.') {
        parts += 1;
        let mut chars = part.chars();
        if !chars.next().is_some_and(char::is_alphabetic) {
            return false;
        }
        let (mut digits, mut joiner) = (false, false);
        for c in chars {
            if c.is_ascii_digit() && !joiner {
                digits = true;
            } else if digits {
                return false;
            } else if matches!(c, '-' | '_' | '\'') && !joiner {
                joiner = true;
            } else if c.is_alphabetic() || unicode_normalization::char::is_combining_mark(c) {
                joiner = false;
            } else {
                return false;
            }
        }
        if joiner {
            return false;
        }
    }
    parts >= 2
}

/// Top-level domains common enough to accept in a spelled-out address, where an unknown
/// word after the last "dot" is more likely code (`x @ self.weight`) than a domain: every
/// two-letter label (country codes), internationalized ones, and these.
const COMMON_TLD: &[&str] = &[
    "com", "net", "org", "edu", "gov", "mil", "int", "info", "biz", "name", "pro", "mobi", "asia",
    "jobs", "travel", "museum", "aero", "coop", "tel", "app", "dev", "cloud", "online", "site",
    "tech", "store", "shop", "blog", "xyz", "top", "club", "live", "email", "mail", "news", "page",
    "world", "today", "digital", "network", "systems", "company", "agency", "group", "media",
    "studio", "design", "website", "space", "family", "social", "team",
];

/// A common top-level domain, not in camel case (`k.mT` is code).
fn is_common_tld(label: &str) -> bool {
    let camel = label
        .as_bytes()
        .windows(2)
        .any(|w| w[0].is_ascii_lowercase() && w[1].is_ascii_uppercase());
    is_tld(label)
        && !camel
        && (!label.is_ascii()
            || label.len() == 2
            || label.as_bytes()[..4.min(label.len())].eq_ignore_ascii_case(b"xn--")
            || COMMON_TLD.iter().any(|w| label.eq_ignore_ascii_case(w)))
}

/// Up to `max` spaces or tabs from `i`: where they end.
fn skip_spaces(b: &[u8], i: usize, max: usize) -> usize {
    let mut j = i;
    while j < b.len() && j - i < max && matches!(b[j], b' ' | b'\t') {
        j += 1;
    }
    j
}

/// Up to `max` spaces or tabs before `i`: where they start.
fn skip_spaces_back(b: &[u8], i: usize, max: usize) -> usize {
    let mut j = i;
    while j > 0 && i - j < max && matches!(b[j - 1], b' ' | b'\t') {
        j -= 1;
    }
    j
}

/// A word spelled in brackets at `i`: `[at]`, `(at)`, `{at}`, `<at>` (any case, up to two
/// spaces inside) or `symbol` in its place (`[@]`, `(.)`); where the token ends.
fn bracketed(b: &[u8], i: usize, word: &[u8], symbol: u8) -> Option<usize> {
    let close = match b.get(i)? {
        b'[' => b']',
        b'(' => b')',
        b'{' => b'}',
        b'<' => b'>',
        _ => return None,
    };
    let mut j = skip_spaces(b, i + 1, 2);
    if b.get(j) == Some(&symbol) {
        j += 1;
    } else if starts_ci(b, j, word) {
        j += word.len();
    } else {
        return None;
    }
    j = skip_spaces(b, j, 2);
    (b.get(j) == Some(&close)).then_some(j + 1)
}

/// An `at` in brackets somewhere (`[at]`, `( AT )`, `{at}`, `<at>`): what an address
/// spelled out without an '@' needs.
fn bracketed_at(b: &[u8]) -> bool {
    let mut from = 0;
    while let Some(i) = find_ci(b, b"at", from) {
        from = i + 1;
        let open = skip_spaces_back(b, i, 2);
        if open > 0 && bracketed(b, open - 1, b"at", b'@').is_some() {
            return true;
        }
    }
    false
}

/// The same token ending at `end` (just after its closing bracket); where it starts.
fn bracketed_before(b: &[u8], end: usize, word: &[u8], symbol: u8) -> Option<usize> {
    let open = match b[..end].last()? {
        b']' => b'[',
        b')' => b'(',
        b'}' => b'{',
        b'>' => b'<',
        _ => return None,
    };
    let mut j = skip_spaces_back(b, end - 1, 2);
    if j > 0 && b[j - 1] == symbol {
        j -= 1;
    } else if j >= word.len() && b[j - word.len()..j].eq_ignore_ascii_case(word) {
        j -= word.len();
    } else {
        return None;
    }
    j = skip_spaces_back(b, j, 2);
    (j > 0 && b[j - 1] == open).then_some(j - 1)
}

/// After a label ending at `j`: a '.' or '。', or a spelled dot (`[dot]`, `(.)`, …) with up
/// to three spaces around it. Where the next label starts, and whether the dot was spelled.
fn dot_after(t: &str, j: usize) -> Option<(usize, bool)> {
    let b = t.as_bytes();
    match b.get(j)? {
        b'.' => return Some((j + 1, false)),
        _ if t[j..].starts_with('。') => return Some((j + '。'.len_utf8(), false)),
        _ => {}
    }
    let e = bracketed(b, skip_spaces(b, j, 3), b"dot", b'.')?;
    Some((skip_spaces(b, e, 3), true))
}

/// Before an atom starting at `s`: a '.', or a spelled dot with spaces around it. Where
/// the previous atom ends, and whether the dot was spelled.
fn dot_before(b: &[u8], s: usize) -> Option<(usize, bool)> {
    if s > 0 && b[s - 1] == b'.' {
        return Some((s - 1, false));
    }
    let open = bracketed_before(b, skip_spaces_back(b, s, 3), b"dot", b'.')?;
    Some((skip_spaces_back(b, open, 3), true))
}

/// A character of a spelled-out address's local part: letters and digits of any script,
/// combining marks, `_`, `-`, `+`, `'`.
fn is_plain_local_char(c: char) -> bool {
    is_label_char(c) || matches!(c, '_' | '-' | '+' | '\'')
}

/// The local part ending at `end` of a spelled-out address: atoms joined by dots, plain or
/// spelled, 128 bytes at most. Its start, and whether a dot in it was spelled.
fn spelled_local_start(t: &str, end: usize) -> Option<(usize, bool)> {
    let b = t.as_bytes();
    let (mut start, mut spelled, mut pending) = (None, false, false);
    let mut e = end;
    loop {
        let mut s = e;
        for (i, c) in t[..e].char_indices().rev() {
            if !is_plain_local_char(c) || end - i > 128 {
                break;
            }
            s = i;
        }
        if s == e {
            break;
        }
        // The dot after this atom belongs to the local part now.
        start = Some(s);
        spelled |= pending;
        match dot_before(b, s) {
            Some((p, sp)) if end - p <= 128 => (e, pending) = (p, sp),
            _ => break,
        }
    }
    Some((start?, spelled))
}

/// The domain of a spelled-out address from `from`: labels joined by dots, plain or
/// spelled, at most eight, the last a common top-level domain ([`is_common_tld`]). Its
/// end (the longest such domain), and whether a dot in it was spelled.
fn spelled_domain_end(t: &str, from: usize) -> Option<(usize, bool)> {
    let (mut best, mut spelled, mut labels) = (None, false, 0);
    let mut j = from;
    loop {
        let mut e = j;
        let mut n = 0;
        for (i, c) in t[j..].char_indices() {
            if !(is_label_char(c) || c == '-') || n == 63 {
                break;
            }
            e = j + i + c.len_utf8();
            n += 1;
        }
        let label = &t[j..e];
        if n == 0 || label.starts_with('-') || label.ends_with('-') {
            return best;
        }
        labels += 1;
        if labels >= 2 && is_common_tld(label) {
            best = Some((e, spelled));
        }
        if labels == 8 {
            return best;
        }
        match dot_after(t, e) {
            Some((k, sp)) => {
                spelled |= sp;
                j = k;
            }
            None => return best,
        }
    }
}

/// Addresses with the `@` or a '.' spelled out: `alice @ example.com`,
/// `alice [at] example [dot] com`, `alice (at) example (dot) com`, `bob {at} mail {dot} co
/// {dot} uk`, `dave [@] example.net`, `erin@example[.]com`. The domain must end in a
/// common top-level domain. A bare `@` with spaces around it is not taken with a local part
/// or first label of one character (`q @ k.T`), before a call or an index
/// (`a @ b.to(dev)`) or after `self`/`this` (`x @ self.w`): Python's matrix product. Plain
/// words (`alice at example dot com`) are not read.
fn spelled_email(t: &str, brackets: bool, hit: &mut Hit<'_>) -> bool {
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let (tok_end, bracket) = match b[i] {
            b'@' => (i + 1, false),
            b'[' | b'(' | b'{' | b'<' => match bracketed(b, i, b"at", b'@') {
                Some(e) => (e, true),
                None => {
                    i += 1;
                    continue;
                }
            },
            _ => {
                i += 1;
                continue;
            }
        };
        let tok = i;
        i += 1;
        let (ls, ds) = (skip_spaces_back(b, tok, 3), skip_spaces(b, tok_end, 3));
        let spaced = ls < tok || ds > tok_end;
        if !bracket && ls < tok && ds == tok_end {
            continue; // `Add @example.org`, `cc @alice.smith`: a handle or a domain
        }
        if !(bracket || spaced || brackets) {
            continue; // a plain address, no dot can be spelled: email() reads it
        }
        let Some((end, d_spelled)) = spelled_domain_end(t, ds) else {
            continue;
        };
        let Some((start, l_spelled)) = spelled_local_start(t, ls) else {
            continue;
        };
        if !(bracket || spaced || d_spelled || l_spelled) {
            continue; // a plain address: email() reads it
        }
        if !bracket && !d_spelled {
            let short = |w: &str| w.chars().nth(1).is_none();
            let first = t[ds..end].split('.').next().unwrap_or_default();
            let code = matches!(b.get(end), Some(b'(' | b'['))
                || short(&t[start..ls])
                || short(first)
                || first.eq_ignore_ascii_case("self")
                || first.eq_ignore_ascii_case("this");
            if code {
                continue;
            }
        }
        emit!(hit, start..end, PiiKind::Email);
        i = end;
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

/// A dotted octet: without leading zeros, or zero-padded to three digits (`001`, `042`).
fn dotted_octet(b: &[u8]) -> Option<u8> {
    if b.len() == 3 && b[0] == b'0' {
        return octet(&b[1 + (b[1] == b'0') as usize..]);
    }
    octet(b)
}

/// Four octets that name a host, not a version: the first is not 0, and not all four are
/// below 10 (`1.2.3.4`, `4.2.1.0`, `001.002.003.004` are versions far more often than
/// addresses).
fn host_octets(parts: &[&[u8]]) -> bool {
    let mut v = [0u8; 4];
    if parts.len() != 4 {
        return false;
    }
    for (x, p) in v.iter_mut().zip(parts) {
        match dotted_octet(p) {
            Some(o) => *x = o,
            None => return false,
        }
    }
    v[0] != 0 && v.iter().any(|&o| o >= 10)
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
        || w.eq_ignore_ascii_case(b"ver")
        || ends(b"_ver")
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
