//! Numbers: IBANs (mod-97), payment cards (Luhn), US social security numbers (grouped, or
//! nine digits after an SSN keyword) and phone numbers (E.164, national UK/German/French
//! and North American formats). Digits of other scripts arrive as ASCII (normalization).
//!
//! Cards, SSNs and phones are read from *runs*: digit groups joined by short separators.
//! A detector tries windows of whole groups inside a run instead of one greedy match, so
//! a digit before a card number or an expiry after it does not hide the card.

use super::{
    contains_ci, emit, find_ci, is_word_at, is_word_before, mask, starts_ci, Hit, PiiKind, Pre,
};
use smallvec::SmallVec;

pub(super) fn find(t: &str, p: &Pre, hit: &mut Hit<'_>) -> bool {
    let b = t.as_bytes();
    (p.digits < 8 || b.len() < 15 || !p.iban_head || iban(b, hit))
        && (p.max_num < 13 || cards(b, hit))
        && (p.max_num < 9 || (p.dashes < 2 && p.spaces < 2) || ssn(b, hit))
        && (p.max_num < 9
            || !((p.has_letters(mask(b"sn")) && contains_ci(b, b"ssn"))
                || (p.has_letters(mask(b"social")) && contains_ci(b, b"social")))
            || ssn_keyword(b, hit))
        && ((p.max_num < 9 && !(p.plus && p.max_num >= 8)) || phones(b, p, hit))
}

/// Digit groups `(start, end)` of one run.
type Groups = SmallVec<[(usize, usize); 8]>;

/// Calls `f` with each run: maximal digit groups joined by 1..=`max_sep` bytes of `seps`.
fn runs(b: &[u8], seps: &[u8], max_sep: usize, mut f: impl FnMut(&Groups) -> bool) -> bool {
    let mut i = 0;
    let mut groups = Groups::new();
    while i < b.len() {
        let Some(off) = b[i..].iter().position(u8::is_ascii_digit) else {
            break;
        };
        let mut j = i + off;
        groups.clear();
        loop {
            let g = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            groups.push((g, j));
            let mut k = j;
            while k < b.len() && k - j < max_sep && seps.contains(&b[k]) {
                k += 1;
            }
            if k > j && k < b.len() && b[k].is_ascii_digit() {
                j = k;
            } else {
                break;
            }
        }
        if !f(&groups) {
            return false;
        }
        i = j;
    }
    true
}

fn luhn(b: &[u8], groups: &[(usize, usize)]) -> bool {
    let mut sum = 0u32;
    let mut i = 0;
    for &(s, e) in groups.iter().rev() {
        for &d in b[s..e].iter().rev() {
            let mut v = (d - b'0') as u32;
            if i % 2 == 1 {
                v *= 2;
                if v > 9 {
                    v -= 9;
                }
            }
            sum += v;
            i += 1;
        }
    }
    sum.is_multiple_of(10)
}

/// Card networks start with 2 (Mastercard 2-series), 3 (Amex, Diners, JCB), 4 (Visa),
/// 5 (Mastercard, Maestro) or 6 (Discover, UnionPay, Maestro); other first digits are
/// timestamps and counters.
fn card_brand(first: u8) -> bool {
    matches!(first, b'2'..=b'6')
}

/// A word is glued on before `s` (`a1b4111…`), unless it is letters and '_' only
/// (`x4111…`, `cc_4111…`): a label in front of a card, not part of a longer identifier.
fn glued_before(b: &[u8], s: usize) -> bool {
    let mut j = s;
    while j > 0 && (b[j - 1].is_ascii_alphabetic() || b[j - 1] == b'_') {
        j -= 1;
    }
    is_word_before(b, j)
}

/// The same after `e`: `4111…x` is a card, `4111…x1` is not.
fn glued_after(b: &[u8], e: usize) -> bool {
    let mut j = e;
    while j < b.len() && (b[j].is_ascii_alphabetic() || b[j] == b'_') {
        j += 1;
    }
    is_word_at(b, j)
}

/// Groups `start..=end` may be a card: if any separator is `_` or `/`, they are all the
/// same and the groups have a card's layout, 4-4-4-4 (and a last group of 1–4) or Amex's
/// 4-6-5 and Diners' 4-6-4 (`4111_1111_1111_1111`, `4111/1111/1111/1111`; not a path's
/// `/a/54815033/3782797`, nor a date after a card, `… 1111 12/28`). Spaces, dashes and
/// dots may mix, in any layout.
fn grouping_agrees(b: &[u8], g: &[(usize, usize)], start: usize, end: usize) -> bool {
    if !(start..end).any(|k| matches!(b[g[k].1], b'_' | b'/')) {
        return true;
    }
    let first = b[g[start].1];
    if (start..end).any(|k| b[g[k].1] != first) {
        return false;
    }
    let len = |k: usize| g[k].1 - g[k].0;
    let n = end - start + 1;
    let fours = n >= 4 && (start..end).all(|k| len(k) == 4) && (1..=4).contains(&len(end));
    let amex = n == 3 && len(start) == 4 && len(start + 1) == 6 && matches!(len(end), 4 | 5);
    fours || amex
}

/// Every window of whole groups holding 13–19 digits is tried (longest first from each
/// start), so digits before or after the card (`7 4111 1111 1111 1111 12/28 123`) do not
/// spoil the Luhn check. A start inside the first group is tried only for the 4-4-4-4
/// layout (`74111 1111 1111 1111`). A single ungrouped run must be the card itself. Groups
/// join by ` `, `-`, `.`, `_` or `/`. A word glued on hides a card if it has digits (a hex
/// id); a word of letters (`x4111111111111111`, `cc_4111…`) does not, but then only the
/// 13–19 digits it touches, ungrouped, can be the card (not `a456-426614174000` in a UUID).
fn cards(b: &[u8], hit: &mut Hit<'_>) -> bool {
    runs(b, b" -._/", 1, |g| {
        let (s0, e0) = (g[0].0, g[g.len() - 1].1);
        if e0 - s0 < 13 || glued_before(b, s0) || glued_after(b, e0) {
            return true;
        }
        let (left, right) = (is_word_before(b, s0), is_word_at(b, e0));
        if left || right {
            let k = if left { 0 } else { g.len() - 1 };
            let (s, e) = g[k];
            let alone = !(left && right && g.len() > 1);
            if alone && (13..=19).contains(&(e - s)) && card_brand(b[s]) && luhn(b, &g[k..=k]) {
                emit!(hit, s..e, PiiKind::PaymentCard);
            }
            return true;
        }
        let mut start = 0;
        while start < g.len() {
            let mut found = None;
            if card_brand(b[g[start].0]) {
                let mut n = 0;
                let mut ends: SmallVec<[usize; 19]> = SmallVec::new();
                for (end, &(s, e)) in g.iter().enumerate().skip(start) {
                    n += e - s;
                    if n > 19 {
                        break;
                    }
                    if n >= 13 {
                        ends.push(end);
                    }
                }
                found = ends
                    .into_iter()
                    .rev()
                    .find(|&end| grouping_agrees(b, g, start, end) && luhn(b, &g[start..=end]));
            }
            match found {
                Some(end) => {
                    emit!(hit, g[start].0..g[end].1, PiiKind::PaymentCard);
                    start = end + 1;
                }
                None => start += 1,
            }
        }
        // One glued digit before a 4-4-4-4 card.
        if g.len() == 4 && g[0].1 - g[0].0 == 5 && g[1..].iter().all(|(s, e)| e - s == 4) {
            let mut w: Groups = g.clone();
            w[0].0 += 1;
            if card_brand(b[w[0].0]) && grouping_agrees(b, &w, 0, 3) && luhn(b, &w) {
                emit!(hit, w[0].0..w[3].1, PiiKind::PaymentCard);
            }
        }
        true
    })
}

/// `NNN-NN-NNNN` (or with spaces) that the SSA could have issued: area not 000, 666 or
/// 900–999, group not 00, serial not 0000.
fn ssn(b: &[u8], hit: &mut Hit<'_>) -> bool {
    runs(b, b"- ", 1, |g| {
        if g.len() != 3 {
            return true;
        }
        let lens = [g[0].1 - g[0].0, g[1].1 - g[1].0, g[2].1 - g[2].0];
        let (s, e) = (g[0].0, g[2].1);
        if lens != [3, 2, 4] || b[g[0].1] != b[g[1].1] || is_word_before(b, s) || is_word_at(b, e) {
            return true;
        }
        if s > 0 && matches!(b[s - 1], b'-' | b'.' | b'/') {
            return true;
        }
        let ok = issuable_ssn(&b[g[0].0..g[0].1], &b[g[1].0..g[1].1], &b[g[2].0..g[2].1]);
        if ok {
            emit!(hit, s..e, PiiKind::Ssn);
        }
        true
    })
}

/// An SSN the SSA could have issued, from its nine digits: area not 000, 666 or 900–999,
/// group not 00, serial not 0000.
fn issuable_ssn(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    area != b"000" && area != b"666" && area[0] != b'9' && group != b"00" && serial != b"0000"
}

/// Words that may stand between an SSN keyword and the number (`ssn is …`, `social
/// security number: …`).
const SSN_FILLERS: &[&[u8]] = &[b"number", b"num", b"no", b"nr", b"is", b"was"];

/// Where the nine digits after an SSN keyword ending at `k` would start: past spaces and
/// `:=#"'-_.`, and the words of [`SSN_FILLERS`], 24 bytes at most; `None` if anything
/// else comes first.
fn after_ssn_keyword(b: &[u8], k: usize) -> Option<usize> {
    let mut j = k;
    while j < b.len() && j - k <= 24 {
        let c = b[j];
        if c.is_ascii_digit() {
            return Some(j);
        }
        if c.is_ascii_alphabetic() {
            let w = b[j..]
                .iter()
                .take_while(|c| c.is_ascii_alphabetic())
                .count();
            if !SSN_FILLERS
                .iter()
                .any(|f| b[j..j + w].eq_ignore_ascii_case(f))
            {
                return None;
            }
            j += w;
        } else if matches!(
            c,
            b' ' | b'\t' | b':' | b'=' | b'#' | b'"' | b'\'' | b'-' | b'_' | b'.'
        ) {
            j += 1;
        } else {
            return None;
        }
    }
    None
}

/// The end of an SSN keyword at `i`: `ssn`, or `social security` (joined by nothing, a
/// space, `_` or `-`); not inside a word (`lessn`), any case.
fn ssn_keyword_end(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && b[i - 1].is_ascii_alphabetic() {
        return None;
    }
    if starts_ci(b, i, b"ssn") {
        return Some(i + 3);
    }
    if !starts_ci(b, i, b"social") {
        return None;
    }
    let j = i + 6 + matches!(b.get(i + 6), Some(b' ' | b'_' | b'-')) as usize;
    starts_ci(b, j, b"security").then_some(j + 8)
}

/// Nine digits right after an SSN keyword: `ssn 123456789`, `SSN: 078051120`,
/// `"ssn":"219099999"`, `customer_ssn=…`, `social security number 457555462`. The digits
/// stand alone (no digit or letter glued on) and form an issuable SSN.
fn ssn_keyword(b: &[u8], hit: &mut Hit<'_>) -> bool {
    let mut from = 0;
    while let Some(i) = find_ci(b, b"s", from) {
        from = i + 1;
        let Some(k) = ssn_keyword_end(b, i) else {
            continue;
        };
        let Some(j) = after_ssn_keyword(b, k) else {
            continue;
        };
        let n = b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n != 9 || is_word_at(b, j + 9) {
            from = j + n;
            continue;
        }
        if issuable_ssn(&b[j..j + 3], &b[j + 3..j + 5], &b[j + 5..j + 9]) {
            emit!(hit, j..j + 9, PiiKind::Ssn);
        }
        from = j + 9;
    }
    true
}

/// IBAN lengths by country (ISO 13616 registry).
const IBAN_LEN: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

/// Country code, check digits, then the country's number of letters and digits, grouped
/// by single spaces or not at all, with a valid mod-97 checksum.
fn iban(b: &[u8], hit: &mut Hit<'_>) -> bool {
    let mut i = 0;
    while i + 15 <= b.len() {
        let at = i;
        i += 1;
        if !(b[at].is_ascii_alphabetic()
            && b[at + 1].is_ascii_alphabetic()
            && b[at + 2].is_ascii_digit()
            && b[at + 3].is_ascii_digit())
            || is_word_before(b, at)
        {
            continue;
        }
        let cc = [b[at].to_ascii_uppercase(), b[at + 1].to_ascii_uppercase()];
        let Some(&(_, len)) = IBAN_LEN.iter().find(|(c, _)| **c == cc) else {
            continue;
        };
        let mut chars: SmallVec<[u8; 36]> = SmallVec::new();
        let mut j = at;
        while j < b.len() && chars.len() < len {
            let c = b[j];
            if c.is_ascii_alphanumeric() {
                chars.push(c.to_ascii_uppercase());
                j += 1;
            } else if c == b' ' && j > at && b[j - 1] != b' ' && chars.len() >= 4 {
                j += 1;
            } else {
                break;
            }
        }
        if chars.len() != len || is_word_at(b, j) || !mod97(&chars) {
            continue;
        }
        emit!(hit, at..j, PiiKind::Iban);
        i = j;
    }
    true
}

/// ISO 7064 mod 97-10 over the rearranged IBAN (letters as 10–35) equals 1.
fn mod97(chars: &[u8]) -> bool {
    let mut r = 0u32;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        match c {
            b'0'..=b'9' => r = (r * 10 + (c - b'0') as u32) % 97,
            b'A'..=b'Z' => r = (r * 100 + (c - b'A' + 10) as u32) % 97,
            _ => return false,
        }
    }
    r == 1
}

fn sep_of<'a>(b: &'a [u8], g: &[(usize, usize)], i: usize) -> &'a [u8] {
    &b[g[i].1..g[i + 1].0]
}

/// Phone numbers read from runs of digit groups joined by up to three of ` -./()`.
/// A candidate starts at a run's first group or at a group after a space, and must not be
/// glued to a word on either side.
fn phones(b: &[u8], p: &Pre, hit: &mut Hit<'_>) -> bool {
    runs(b, b" -./()", 3, |g| {
        for start in 0..g.len() {
            if start > 0 && !sep_of(b, g, start - 1).contains(&b' ') {
                continue;
            }
            let s = g[start].0;
            let plus = s > 0 && b[s - 1] == b'+';
            if plus {
                if p.plus && !(s >= 2 && b[s - 2].is_ascii_alphanumeric()) {
                    if let Some(end) = international(g, start) {
                        emit!(hit, s - 1..g[end].1, PiiKind::Phone);
                        return true;
                    }
                }
                continue;
            }
            if start == 0 && (is_word_before(b, s) || glued_left(b, s)) {
                continue;
            }
            if let Some(end) = national(b, g, start).or_else(|| nanp(b, g, start)) {
                let open = s > 0 && b[s - 1] == b'(';
                emit!(hit, s - open as usize..g[end].1, PiiKind::Phone);
                return true;
            }
        }
        true
    })
}

/// A '.', '-' or '/' right before `s` that itself follows a word: `v1-…`, `a716-…`.
fn glued_left(b: &[u8], s: usize) -> bool {
    s >= 2 && matches!(b[s - 1], b'.' | b'-' | b'/' | b'(') && b[s - 2].is_ascii_alphanumeric()
}

/// The window ending at group `end` does not run on into more of the same number: the run
/// ends there, or continues after a space (a new token), and no word is glued on.
fn ends_clean(b: &[u8], g: &[(usize, usize)], end: usize) -> bool {
    let e = g[end].1;
    if end + 1 < g.len() {
        return sep_of(b, g, end).contains(&b' ');
    }
    let glued_tail = matches!(b.get(e), Some(b'.' | b'-' | b'/')) && is_word_at(b, e + 1);
    !is_word_at(b, e) && !glued_tail
}

/// `+` and a country code, then groups up to 15 digits in all (E.164), at least 8; the
/// longest such window wins, so a trailing date or count is left out.
fn international(g: &[(usize, usize)], start: usize) -> Option<usize> {
    let mut n = 0;
    let mut best = None;
    for (end, &(s, e)) in g.iter().enumerate().skip(start) {
        n += e - s;
        if n > 15 {
            break;
        }
        if n >= 8 {
            best = Some(end);
        }
    }
    best
}

/// National numbers with a trunk `0`: French `0X XX XX XX XX` (five pairs, one
/// separator), or UK/German area code + one or two groups of 3–8 digits, 9–12 digits in
/// all (`020 7946 0958`, `07700 900123`, `030 12345678`, `030/1234567`).
fn national(b: &[u8], g: &[(usize, usize)], start: usize) -> Option<usize> {
    let len = |i: usize| g[i].1 - g[i].0;
    let first = &b[g[start].0..g[start].1];
    if first.len() < 2 || first.len() > 5 || first[0] != b'0' || first[1] == b'0' {
        return None;
    }
    let avail = g.len() - start;
    if avail >= 5 && (0..5).all(|k| len(start + k) == 2) {
        let sep = sep_of(b, g, start);
        if sep.len() == 1
            && matches!(sep[0], b' ' | b'.' | b'-')
            && (1..4).all(|k| sep_of(b, g, start + k) == sep)
            && ends_clean(b, g, start + 4)
        {
            return Some(start + 4);
        }
    }
    let area_sep = sep_of_opt(b, g, start)?;
    let area_ok = matches!(
        area_sep,
        b" " | b"-" | b"/" | b" / " | b") " | b")" | b" - "
    );
    if !area_ok {
        return None;
    }
    for extra in (1..=2).rev() {
        let end = start + extra;
        if end >= g.len() {
            continue;
        }
        let rest_ok = (start + 1..=end).all(|i| (3..=8).contains(&len(i)));
        let seps_ok = extra == 1 || {
            let s2 = sep_of(b, g, start + 1);
            s2 == b" " || s2 == b"-" || (s2 == area_sep && area_sep.len() == 1)
        };
        let n: usize = (start..=end).map(len).sum();
        if rest_ok && seps_ok && (9..=12).contains(&n) && ends_clean(b, g, end) {
            if area_sep.starts_with(b")") && !(g[start].0 > 0 && b[g[start].0 - 1] == b'(') {
                return None;
            }
            return Some(end);
        }
    }
    None
}

fn sep_of_opt<'a>(b: &'a [u8], g: &[(usize, usize)], i: usize) -> Option<&'a [u8]> {
    (i + 1 < g.len()).then(|| sep_of(b, g, i))
}

/// North American numbers: `(415) 555-0132`, `415-555-0132`, `415.555.0132`,
/// `1-800-555-0199`; area code and exchange start with 2–9.
fn nanp(b: &[u8], g: &[(usize, usize)], start: usize) -> Option<usize> {
    let len = |i: usize| g[i].1 - g[i].0;
    let mut s = start;
    if len(s) == 1 && b[g[s].0] == b'1' && g.len() - s == 4 {
        s += 1;
    }
    if g.len() - s < 3 || len(s) != 3 || len(s + 1) != 3 || len(s + 2) != 4 {
        return None;
    }
    if !matches!(b[g[s].0], b'2'..=b'9') || !matches!(b[g[s + 1].0], b'2'..=b'9') {
        return None;
    }
    let (a, c) = (sep_of(b, g, s), sep_of(b, g, s + 1));
    let paren = g[s].0 > 0 && b[g[s].0 - 1] == b'(';
    let seps_ok = if paren {
        matches!(a, b") " | b")") && matches!(c, b"-" | b" " | b".")
    } else {
        a == c && matches!(a, b"-" | b"." | b" ")
    };
    (seps_ok && ends_clean(b, g, s + 2)).then_some(s + 2)
}
