//! Text normalization before a string is scanned for personal data or pseudonymized.
//!
//! Obfuscated spellings must fall into the ordinary detectors: a full-width `＠`, a
//! zero-width space inside an address, `%40` or `%2540` for `@`, `&#64;` or `\u0040`, digits
//! of other scripts (`٤١١١`, `४१११`). [`for_scan`] undoes those (Unicode NFKC, invisible
//! format characters removed, every decimal digit folded to ASCII, percent-decoding of at
//! most two rounds, HTML character references, backslash-`u` escapes). [`identifier`]
//! makes one person one contributor: the spellings of one address that differ only in
//! case, spacing, invisible characters or Unicode form give one string, so they give one
//! pseudonym.
//!
//! Both return the input borrowed when it needs no change, and decide that for plain
//! ASCII in one cheap pass (NFKC of ASCII is the identity, and ASCII has no invisible
//! format characters and no digits but its own).

use std::borrow::Cow;
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// True for characters that render as nothing (zero-width spaces and joiners, bidi
/// controls, soft hyphen, word joiner, BOM, variation selectors, tag characters, …):
/// they can hide inside a value to split it for a scanner or for a pseudonym.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'                  // soft hyphen
        | '\u{034F}'                // combining grapheme joiner
        | '\u{061C}'                // Arabic letter mark
        | '\u{115F}' | '\u{1160}'   // Hangul choseong/jungseong fillers
        | '\u{17B4}' | '\u{17B5}'   // Khmer inherent vowels
        | '\u{180B}'..='\u{180F}'   // Mongolian free variation selectors, vowel separator
        | '\u{200B}'..='\u{200F}'   // zero-width space/non-joiner/joiner, LRM, RLM
        | '\u{202A}'..='\u{202E}'   // bidi embeddings and overrides
        | '\u{2060}'..='\u{2064}'   // word joiner, invisible operators
        | '\u{2066}'..='\u{206F}'   // bidi isolates, deprecated format characters
        | '\u{3164}'                // Hangul filler
        | '\u{FE00}'..='\u{FE0F}'   // variation selectors
        | '\u{FEFF}'                // byte order mark / zero-width no-break space
        | '\u{FFA0}'                // half-width Hangul filler
        | '\u{FFF9}'..='\u{FFFB}'   // interlinear annotation controls
        | '\u{1BCA0}'..='\u{1BCA3}' // shorthand format controls
        | '\u{1D173}'..='\u{1D17A}' // musical symbol format controls
        | '\u{E0000}'..='\u{E007F}' // tag characters
        | '\u{E0100}'..='\u{E01EF}' // variation selectors supplement
    )
}

/// The text the PII scanner reads: NFKC, invisible characters removed, every Unicode
/// decimal digit (general category Nd: Arabic-Indic, Devanagari, Thai, …) as its ASCII
/// digit, then the encodings that hide an `@` or a `.` in telemetry undone:
///
/// - percent-encoding, at most two rounds, and the second only where the first produced
///   a `%` from `%25` (`%2540` is `@`; `100%25` stays `100%`); valid `%XX` only, bytes that
///   would not form UTF-8 stay as written;
/// - HTML character references: numeric (`&#64;`, `&#x40;`), `&commat;`, `&period;`,
///   `&plus;`, and those escaped once more (`&amp;#64;`);
/// - backslash escapes written out as text: `\u0040`, `\u{40}`, surrogate pairs, `\x40`
///   (printable ASCII only), after any number of backslashes (`\\u0040`); and
///   JavaScript's `%u0040`.
///
/// Control characters are never produced. Borrowed when nothing changes, which plain
/// ASCII without `%`, `&` and `\` decides in one pass.
pub fn for_scan(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    if b.is_ascii() && memchr::memchr3(b'%', b'&', b'\\', b).is_none() {
        return Cow::Borrowed(s);
    }
    for_scan_slow(s)
}

/// [`for_scan`] past its fast path: the caller already knows `s` is not plain ASCII
/// without `%`, `&` and `\` (the scanner's prefilter sees that in its own pass).
pub(crate) fn for_scan_slow(s: &str) -> Cow<'_, str> {
    let mut text = unicode_clean(s, true);
    // Which decoders have work: most values here hold none of their sequences.
    let (mut pct, mut amp, mut bsl) = encoded(text.as_bytes());
    if !(pct || amp || bsl) {
        return text;
    }
    let mut decoded = false;
    if pct {
        if let Some(d) = percent_decode(&text) {
            (pct, amp, bsl) = encoded(d.as_bytes());
            text = Cow::Owned(d);
            decoded = true;
        }
    }
    if amp {
        if let Some(d) = html_references(&text) {
            text = Cow::Owned(d);
            decoded = true;
        }
    }
    if pct || bsl {
        if let Some(d) = backslash_escapes(&text) {
            text = Cow::Owned(d);
            decoded = true;
        }
    }
    if !decoded {
        return text;
    }
    // Decoding may have produced full-width, invisible or non-ASCII digit characters.
    match unicode_clean(&text, true) {
        Cow::Borrowed(_) => text,
        Cow::Owned(o) => Cow::Owned(o),
    }
}

/// Which decoders of [`for_scan`] could change `b`: a `%` before two hex digits or a `u`
/// (percent-decoding, `%uXXXX`), a `&` that starts a reference or `&amp;`, a `\\`
/// before `u`, `x` or another `\\` (an escape). One pass; `100%`, `Tom & Jerry` or
/// `?page=2&per_page=50` need none.
fn encoded(b: &[u8]) -> (bool, bool, bool) {
    let (mut pct, mut amp, mut bsl) = (false, false, false);
    for i in memchr::memchr3_iter(b'%', b'&', b'\\', b) {
        let next = b.get(i + 1).copied().unwrap_or(0);
        match b[i] {
            b'%' => pct |= next.is_ascii_hexdigit() || next | 0x20 == b'u',
            b'&' => amp |= reference(b, i).is_some() || b[i + 1..].starts_with(b"amp;"),
            _ => bsl |= matches!(next, b'u' | b'x' | b'\\'),
        }
    }
    (pct, amp, bsl)
}

/// A direct identifier (an email address, a user name) in the one spelling its
/// pseudonym is computed from: trimmed, NFKC, invisible characters removed; with
/// `email_casefold` and an `@` in it, lowercased and without a trailing `.` after the
/// domain. No percent-decoding: an identifier is taken as written.
pub fn identifier(s: &str, email_casefold: bool) -> Cow<'_, str> {
    let b = s.as_bytes();
    if b.is_ascii() {
        let trimmed = s.trim_matches(|c: char| c.is_ascii_whitespace());
        let casefold = email_casefold && memchr::memchr(b'@', b).is_some();
        let fine = trimmed.len() == s.len()
            && !(casefold && (b.iter().any(u8::is_ascii_uppercase) || s.ends_with('.')));
        if fine {
            return Cow::Borrowed(s);
        }
    }
    let cleaned = unicode_clean(s, false);
    let trimmed = cleaned.trim();
    if !(email_casefold && trimmed.contains('@')) {
        return if trimmed.len() == cleaned.len() {
            cleaned
        } else {
            Cow::Owned(trimmed.to_owned())
        };
    }
    let mut lower = trimmed.to_lowercase();
    // A fully qualified domain's trailing dot names the same domain.
    while lower.ends_with('.') && lower.rsplit('@').next().is_some_and(|d| d.len() > 1) {
        lower.pop();
    }
    let trimmed_len = lower.trim_end().len();
    lower.truncate(trimmed_len);
    if lower == s {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(lower)
    }
}

/// NFKC with invisible characters removed and, with `fold_digits`, every decimal digit as
/// ASCII; borrowed when already clean.
fn unicode_clean(s: &str, fold_digits: bool) -> Cow<'_, str> {
    if s.is_ascii() {
        return Cow::Borrowed(s);
    }
    let clean = !s
        .chars()
        .any(|c| is_invisible(c) || (fold_digits && ascii_digit(c).is_some_and(|_| c > '9')));
    if clean && is_nfkc_quick(s.chars()) == IsNormalized::Yes {
        return Cow::Borrowed(s);
    }
    let out: String = s
        .chars()
        .filter(|&c| !is_invisible(c))
        .nfkc()
        .filter(|&c| !is_invisible(c))
        .map(|c| match ascii_digit(c) {
            Some(d) if fold_digits => d,
            _ => c,
        })
        .collect();
    if out == s {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(out)
    }
}

/// Every range of Unicode 16.0's decimal digits (general category Nd). Each range is one
/// or more runs of the ten digits 0–9 in order, so a digit's value is its offset from the
/// range's start modulo 10. NFKC folds only some of them (full-width, mathematical); the
/// scripts' own digits (Arabic-Indic `٤`, Devanagari `४`, Thai `๔`, …) it leaves alone.
const DECIMAL_DIGITS: &[(u32, u32)] = &[
    (0x30, 0x39),
    (0x660, 0x669),
    (0x6F0, 0x6F9),
    (0x7C0, 0x7C9),
    (0x966, 0x96F),
    (0x9E6, 0x9EF),
    (0xA66, 0xA6F),
    (0xAE6, 0xAEF),
    (0xB66, 0xB6F),
    (0xBE6, 0xBEF),
    (0xC66, 0xC6F),
    (0xCE6, 0xCEF),
    (0xD66, 0xD6F),
    (0xDE6, 0xDEF),
    (0xE50, 0xE59),
    (0xED0, 0xED9),
    (0xF20, 0xF29),
    (0x1040, 0x1049),
    (0x1090, 0x1099),
    (0x17E0, 0x17E9),
    (0x1810, 0x1819),
    (0x1946, 0x194F),
    (0x19D0, 0x19D9),
    (0x1A80, 0x1A89),
    (0x1A90, 0x1A99),
    (0x1B50, 0x1B59),
    (0x1BB0, 0x1BB9),
    (0x1C40, 0x1C49),
    (0x1C50, 0x1C59),
    (0xA620, 0xA629),
    (0xA8D0, 0xA8D9),
    (0xA900, 0xA909),
    (0xA9D0, 0xA9D9),
    (0xA9F0, 0xA9F9),
    (0xAA50, 0xAA59),
    (0xABF0, 0xABF9),
    (0xFF10, 0xFF19),
    (0x104A0, 0x104A9),
    (0x10D30, 0x10D39),
    (0x10D40, 0x10D49),
    (0x11066, 0x1106F),
    (0x110F0, 0x110F9),
    (0x11136, 0x1113F),
    (0x111D0, 0x111D9),
    (0x112F0, 0x112F9),
    (0x11450, 0x11459),
    (0x114D0, 0x114D9),
    (0x11650, 0x11659),
    (0x116C0, 0x116C9),
    (0x116D0, 0x116E3),
    (0x11730, 0x11739),
    (0x118E0, 0x118E9),
    (0x11950, 0x11959),
    (0x11BF0, 0x11BF9),
    (0x11C50, 0x11C59),
    (0x11D50, 0x11D59),
    (0x11DA0, 0x11DA9),
    (0x11F50, 0x11F59),
    (0x16130, 0x16139),
    (0x16A60, 0x16A69),
    (0x16AC0, 0x16AC9),
    (0x16B50, 0x16B59),
    (0x16D70, 0x16D79),
    (0x1CCF0, 0x1CCF9),
    (0x1D7CE, 0x1D7FF),
    (0x1E140, 0x1E149),
    (0x1E2F0, 0x1E2F9),
    (0x1E4F0, 0x1E4F9),
    (0x1E5F1, 0x1E5FA),
    (0x1E950, 0x1E959),
    (0x1FBF0, 0x1FBF9),
];

/// The ASCII digit a decimal digit of any script stands for; `None` for anything else.
pub fn ascii_digit(c: char) -> Option<char> {
    let cp = c as u32;
    if cp < 0x80 {
        return c.is_ascii_digit().then_some(c);
    }
    if cp < 0x660 {
        return None;
    }
    let i = DECIMAL_DIGITS.partition_point(|&(_, end)| end < cp);
    let &(start, end) = DECIMAL_DIGITS.get(i)?;
    (start..=end)
        .contains(&cp)
        .then(|| char::from(b'0' + ((cp - start) % 10) as u8))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decoding of at most two rounds; `None` when no valid `%XX` was decoded. The
/// second round decodes only the `%` the first produced from `%25` (`%2540` is `@`, and a
/// literal `%41` next to it is not decoded twice).
fn percent_decode(s: &str) -> Option<String> {
    let mut made = Vec::new();
    let once = percent_round(s, None, &mut made)?;
    if made.is_empty() {
        return Some(once);
    }
    Some(percent_round(&once, Some(&made), &mut Vec::new()).unwrap_or(once))
}

/// One round of percent-decoding; `None` when no valid `%XX` was decoded. A run of
/// consecutive `%XX` is decoded where its bytes form UTF-8; bytes that do not stay in
/// their original `%XX` spelling, so the result is always valid UTF-8. With `only`, just
/// the `%` at those byte offsets start a triple. The offsets in the result of every `%`
/// that decoding produced are pushed to `made`, in order.
fn percent_round(s: &str, only: Option<&[usize]>, made: &mut Vec<usize>) -> Option<String> {
    let b = s.as_bytes();
    let allowed = |j: usize| only.is_none_or(|o| o.binary_search(&j).is_ok());
    let mut out = String::with_capacity(s.len());
    let mut changed = false;
    let mut copied = 0; // bytes of `s` before this index are already in `out`
    let mut i = 0;
    let mut run = Vec::new();
    while let Some(off) = memchr::memchr(b'%', &b[i..]) {
        let start = i + off;
        // Collect a run of consecutive valid %XX triples.
        run.clear();
        let mut j = start;
        while j + 2 < b.len() && b[j] == b'%' && allowed(j) {
            match (hex_val(b[j + 1]), hex_val(b[j + 2])) {
                (Some(h), Some(l)) => {
                    run.push(h << 4 | l);
                    j += 3;
                }
                _ => break,
            }
        }
        if run.is_empty() {
            i = start + 1;
            continue;
        }
        out.push_str(&s[copied..start]);
        let mut k = 0; // index into `run`, triple k starts at start + 3k
        for chunk in run.utf8_chunks() {
            let valid = chunk.valid();
            if !valid.is_empty() {
                made.extend(memchr::memchr_iter(b'%', valid.as_bytes()).map(|p| out.len() + p));
                out.push_str(valid);
                changed = true;
            }
            k += valid.len();
            let bad = chunk.invalid().len();
            out.push_str(&s[start + 3 * k..start + 3 * (k + bad)]);
            k += bad;
        }
        copied = j;
        i = j;
    }
    if !changed {
        return None;
    }
    out.push_str(&s[copied..]);
    Some(out)
}

/// A character a decoded reference or escape may stand for: not a control character,
/// not a surrogate.
fn decodable(cp: u32) -> Option<char> {
    char::from_u32(cp).filter(|c| !c.is_control())
}

/// A numeric character reference after its `&#` at `b[i..]`: decimal or `x` and hex, the
/// `;` optional as browsers read it. The character and the bytes it spans.
fn numeric_reference(b: &[u8], i: usize) -> Option<(char, usize)> {
    let hex = matches!(b.get(i), Some(b'x' | b'X'));
    let from = i + hex as usize;
    let mut j = from;
    let mut v: u32 = 0;
    while j < b.len() && j - from < 8 {
        let d = if hex {
            hex_val(b[j]).map(u32::from)
        } else {
            b[j].is_ascii_digit().then(|| u32::from(b[j] - b'0'))
        };
        let Some(d) = d else { break };
        v = v * if hex { 16 } else { 10 } + d;
        j += 1;
    }
    if j == from {
        return None;
    }
    let c = decodable(v)?;
    let end = j + (b.get(j) == Some(&b';')) as usize;
    Some((c, end - (i - 2)))
}

/// The named references that spell an address's punctuation.
const NAMED: &[(&[u8], char)] = &[
    (b"commat;", '@'),
    (b"period;", '.'),
    (b"plus;", '+'),
    (b"lowbar;", '_'),
    (b"hyphen;", '-'),
];

/// The reference at `b[i..]` (which starts with `&`): the character and its length.
fn reference(b: &[u8], i: usize) -> Option<(char, usize)> {
    let rest = &b[i + 1..];
    if rest.first() == Some(&b'#') {
        return numeric_reference(b, i + 2);
    }
    NAMED
        .iter()
        .find(|(n, _)| rest.starts_with(n))
        .map(|&(n, c)| (c, n.len() + 1))
}

/// HTML character references undone (see [`for_scan`]); `None` when there were none.
fn html_references(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'&', &b[i..]) {
        let at = i + off;
        i = at + 1;
        // `&amp;#64;`: a reference escaped once more; one level of that, no more.
        let (inner, skip) = if b[at + 1..].starts_with(b"amp;") {
            (at + 4, 4)
        } else {
            (at, 0)
        };
        let Some((c, len)) = reference(b, inner) else {
            continue;
        };
        out.push_str(&s[copied..at]);
        out.push(c);
        copied = at + skip + len;
        i = copied;
    }
    (copied > 0).then(|| {
        out.push_str(&s[copied..]);
        out
    })
}

/// `\u0040`, `\u{40}` or `\x40` at `b[i..]` (just after the backslashes), or with `lead`
/// `%` JavaScript's `%u0040` (just after the `%`): the character and the bytes it spans. A
/// high surrogate takes the low one of a following `\uXXXX` (`%uXXXX`).
fn escape(b: &[u8], i: usize, lead: u8) -> Option<(char, usize)> {
    let hex = |from: usize, n: usize| -> Option<u32> {
        let d = b.get(from..from + n)?;
        d.iter()
            .try_fold(0u32, |v, &c| Some(v << 4 | u32::from(hex_val(c)?)))
    };
    match b.get(i)? {
        b'x' | b'u' if lead == b'%' && b.get(i + 1) == Some(&b'{') => None,
        b'x' if lead == b'%' => None,
        b'x' => {
            let v = hex(i + 1, 2)?;
            (0x20..0x7f).contains(&v).then(|| (char::from(v as u8), 3))
        }
        b'u' if b.get(i + 1) == Some(&b'{') => {
            let n = b[i + 2..].iter().take(7).position(|&c| c == b'}')?;
            let v = (1..=6).contains(&n).then(|| hex(i + 2, n))??;
            Some((decodable(v)?, n + 3))
        }
        b'u' => {
            let v = hex(i + 1, 4)?;
            if (0xD800..0xDC00).contains(&v) && b.get(i + 5..i + 7) == Some(&[lead, b'u'][..]) {
                let lo = hex(i + 7, 4)?;
                if (0xDC00..0xE000).contains(&lo) {
                    let cp = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
                    return Some((decodable(cp)?, 11));
                }
            }
            Some((decodable(v)?, 5))
        }
        _ => None,
    }
}

/// Backslash escapes written out as text, and JavaScript's `%uXXXX`, undone (see
/// [`for_scan`]); `None` when there were none. The run of backslashes before an escape
/// goes with it.
fn backslash_escapes(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while let Some(off) = memchr::memchr2(b'\\', b'%', &b[i..]) {
        let at = i + off;
        let lead = b[at];
        let mut j = at + 1;
        while lead == b'\\' && j < b.len() && b[j] == b'\\' {
            j += 1;
        }
        i = j;
        let Some((c, len)) = escape(b, j, lead) else {
            continue;
        };
        out.push_str(&s[copied..at]);
        out.push(c);
        copied = j + len;
        i = copied;
    }
    (copied > 0).then(|| {
        out.push_str(&s[copied..]);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ascii_is_borrowed() {
        for s in ["payments", "4.2.1", "GET /api/v1/users/{id}", ""] {
            assert!(matches!(for_scan(s), Cow::Borrowed(_)), "{s}");
            assert!(matches!(identifier(s, true), Cow::Borrowed(_)), "{s}");
        }
        assert!(matches!(for_scan("cpu 93%"), Cow::Borrowed(_)));
        // '%', '&' and '\\' that start nothing to decode cost no decoder.
        for s in [
            "?page=2&per_page=50",
            "Tom & Jerry",
            "C:\\Users\\Public",
            "50% off",
        ] {
            assert_eq!(encoded(s.as_bytes()), (false, false, false), "{s}");
            assert!(matches!(for_scan(s), Cow::Borrowed(_)), "{s}");
        }
        assert_eq!(encoded(b"%41&#64;\\u0040"), (true, true, true));
        assert!(matches!(for_scan("Ошибка сети"), Cow::Borrowed(_)));
    }

    #[test]
    fn for_scan_undoes_obfuscation() {
        assert_eq!(for_scan("alice＠example.com"), "alice@example.com");
        assert_eq!(
            for_scan("alice\u{200b}@exa\u{00ad}mple.com"),
            "alice@example.com"
        );
        assert_eq!(for_scan("alice%40example.com"), "alice@example.com");
        // Two rounds, the second only where the first made a '%'.
        assert_eq!(for_scan("alice%2540example.com"), "alice@example.com");
        assert_eq!(for_scan("%252540"), "%40");
        assert_eq!(for_scan("%25%34%30"), "@");
        assert_eq!(for_scan("50%2525 off"), "50% off");
        assert_eq!(for_scan("%2541 %41"), "A A");
        assert_eq!(for_scan("%2525%41"), "%A");
        assert_eq!(for_scan("０２０ ７９４６ ０９５８"), "020 7946 0958");
        assert_eq!(for_scan("a%E2%80%8Bb"), "ab");
        assert_eq!(for_scan("100%25 done"), "100% done");
        // Not UTF-8: the bytes keep their spelling; the valid part around them decodes.
        assert_eq!(for_scan("x%FF%41y"), "x%FFAy");
        assert_eq!(for_scan("%C3%A9t%C3"), "\u{e9}t%C3");
        assert_eq!(for_scan("50%-off %zz %4"), "50%-off %zz %4");
    }

    #[test]
    fn for_scan_undoes_references_and_escapes() {
        for s in [
            "alice&#64;example.com",
            "alice&#x40;example.com",
            "alice&#X40;example&#46;com",
            "alice&#064example.com",
            "alice&commat;example&period;com",
            "alice&amp;#64;example.com",
            "alice&amp;commat;example.com",
            "alice\\u0040example.com",
            "alice\\\\u0040example\\u002Ecom",
            "alice\\u{40}example.com",
            "alice\\x40example.com",
            "alice&#xFF20;example.com",
            "alice&#8203;@example.com",
            "alice%26%2364%3Bexample.com",
            "alice%u0040example.com",
        ] {
            assert_eq!(for_scan(s), "alice@example.com", "{s}");
        }
        assert_eq!(for_scan("\\uD83D\\uDE00!"), "\u{1F600}!");
        // Left as written: no reference, no escape, or a character it may not produce.
        for s in [
            "Tom & Jerry",
            "a &amp; b",
            "&amp;amp;#64;",
            "&#;",
            "&#x;",
            "&#0;",
            "&#1;x",
            "&#xD800;",
            "&#99999999;",
            "C:\\Users\\Public",
            "\\uD83D alone",
            "\\u00",
            "\\x0a\\x7f\\x80",
            "\\u{}",
            "\\u{1234567}",
            "\\u000a",
            "%u{40}",
            "%x40",
            "%u00",
            "100%",
        ] {
            assert_eq!(for_scan(s), s, "{s}");
        }
        assert_eq!(for_scan("&#x25;40"), "%40");
        assert_eq!(for_scan("caf\\u00e9"), "caf\u{e9}");
    }

    #[test]
    fn digits_of_every_script_fold_to_ascii() {
        assert_eq!(for_scan("\u{664}\u{661}\u{661}\u{661}"), "4111");
        assert_eq!(for_scan("\u{6F5}\u{6F4}"), "54");
        assert_eq!(for_scan("\u{966}\u{968}\u{966} \u{96D}\u{96F}"), "020 79");
        assert_eq!(for_scan("\u{E54}\u{E51}"), "41");
        assert_eq!(for_scan("\u{1D7D2}\u{1D7D7}"), "49"); // mathematical digits (NFKC)
        assert_eq!(for_scan("\u{116DA}\u{116E3}"), "09"); // a merged range: 0x116D0..=0x116E3
                                                          // Numbers that are not decimal digits stay what NFKC makes of them.
        assert_eq!(for_scan("\u{2155} \u{216B}"), "1\u{2044}5 XII");
        // The table is exactly Unicode's Nd, as the regex crate's tables have it.
        let nd = regex::Regex::new(r"^\p{Nd}$").unwrap();
        let mut buf = [0u8; 4];
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let is_nd = nd.is_match(c.encode_utf8(&mut buf));
            assert_eq!(ascii_digit(c).is_some(), is_nd, "{:X}", c as u32);
            if let Some(d) = ascii_digit(c) {
                assert!(c.is_numeric(), "{:X}", c as u32);
                if c.is_ascii() {
                    assert_eq!(d, c);
                }
            }
        }
        // Identifiers keep their digits: another script's digits are another address.
        assert_eq!(
            identifier("user\u{664}\u{662}@example.com", true),
            "user\u{664}\u{662}@example.com"
        );
    }

    #[test]
    fn one_person_one_identifier() {
        let same = [
            "Alice.Smith@Example.com",
            " alice.smith@example.com ",
            "alice.smith@example.com",
            "ALICE.SMITH@EXAMPLE.COM",
            "alice.smith\u{200b}@example.com",
            "alice.smith@example.com.",
            "ａｌｉｃｅ.smith＠example.com",
            "\u{feff}alice.smith@example.com",
            "alice.smith@example.com\t",
            "Alice.Smith@example.COM\u{202c}",
        ];
        for s in same {
            assert_eq!(identifier(s, true), "alice.smith@example.com", "{s:?}");
        }
        let composed = "jos\u{e9}@example.com";
        let decomposed = "jose\u{301}@example.com";
        assert_eq!(identifier(composed, true), identifier(decomposed, true));
        assert_eq!(identifier("Jose\u{301}@Example.com", true), composed);
        // Without casefolding, case stays; the rest is still cleaned.
        assert_eq!(identifier(" Bob\u{200d} ", false), "Bob");
        assert_eq!(identifier("Bob@Example.com", false), "Bob@Example.com");
        assert_eq!(identifier("user-42", true), "user-42");
    }
}
