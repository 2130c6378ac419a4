//! Text normalization before a string is scanned for personal data or pseudonymized.
//!
//! Obfuscated spellings must fall into the ordinary detectors: a full-width `＠`, a
//! zero-width space inside an address, `%40` for `@`, full-width digits. [`for_scan`]
//! undoes those (Unicode NFKC, invisible format characters removed, one round of
//! percent-decoding). [`identifier`] makes one person one contributor: the spellings of
//! one address that differ only in case, spacing, invisible characters or Unicode form
//! give one string, so they give one pseudonym.
//!
//! Both return the input borrowed when it needs no change, and decide that for plain
//! ASCII in one cheap pass (NFKC of ASCII is the identity, and ASCII has no invisible
//! format characters).

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

/// The text the PII scanner reads: NFKC, invisible characters removed, and one round of
/// percent-decoding (valid `%XX` only; bytes that would not form UTF-8 stay as written).
/// Borrowed when nothing changes, which plain ASCII without `%` decides in one pass.
pub fn for_scan(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    if b.is_ascii() && memchr::memchr(b'%', b).is_none() {
        return Cow::Borrowed(s);
    }
    for_scan_slow(s)
}

/// [`for_scan`] past its fast path: the caller already knows `s` is not plain ASCII
/// without `%` (the scanner's prefilter sees that in its own pass).
pub(crate) fn for_scan_slow(s: &str) -> Cow<'_, str> {
    let text = unicode_clean(s);
    if !text.contains('%') {
        return text;
    }
    match percent_decode_once(&text) {
        None => text,
        Some(decoded) => {
            // Decoding may have produced full-width or invisible characters: clean again.
            match unicode_clean(&decoded) {
                Cow::Borrowed(_) => Cow::Owned(decoded),
                Cow::Owned(o) => Cow::Owned(o),
            }
        }
    }
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
    let cleaned = unicode_clean(s);
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

/// NFKC with invisible characters removed; borrowed when already clean.
fn unicode_clean(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        return Cow::Borrowed(s);
    }
    if !s.chars().any(is_invisible) && is_nfkc_quick(s.chars()) == IsNormalized::Yes {
        return Cow::Borrowed(s);
    }
    let out: String = s
        .chars()
        .filter(|&c| !is_invisible(c))
        .nfkc()
        .filter(|&c| !is_invisible(c))
        .collect();
    if out == s {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(out)
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One round of percent-decoding; `None` when no valid `%XX` was decoded. A run of
/// consecutive `%XX` is decoded where its bytes form UTF-8; bytes that do not stay in
/// their original `%XX` spelling, so the result is always valid UTF-8.
fn percent_decode_once(s: &str) -> Option<String> {
    let b = s.as_bytes();
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
        while j + 2 < b.len() && b[j] == b'%' {
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
        assert_eq!(for_scan("alice%2540example.com"), "alice%40example.com");
        assert_eq!(for_scan("０２０ ７９４６ ０９５８"), "020 7946 0958");
        assert_eq!(for_scan("a%E2%80%8Bb"), "ab");
        assert_eq!(for_scan("100%25 done"), "100% done");
        // Not UTF-8: the bytes keep their spelling; the valid part around them decodes.
        assert_eq!(for_scan("x%FF%41y"), "x%FFAy");
        assert_eq!(for_scan("%C3%A9t%C3"), "\u{e9}t%C3");
        assert_eq!(for_scan("50%-off %zz %4"), "50%-off %zz %4");
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
