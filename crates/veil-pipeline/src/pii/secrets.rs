//! Secrets: API keys and access tokens with a known prefix, PEM private keys, JWTs (the
//! header decodes to a JSON object with `alg`), `Basic` and URL credentials, bearer
//! tokens, values assigned to password/secret/token/key variables (Azure's `AccountKey=`
//! in a connection string among them), Azure SAS signatures, and passwords given in prose
//! (`the password is hunter2`).
//!
//! Hand-written rather than gitleaks' rule set: see `docs/pii-scanner.md` for the
//! measurement behind that choice.

use super::{contains_ci, emit, is_word_before, mask, starts_ci, Hit, PiiKind, Pre};
use base64::Engine as _;
use regex::Regex;
use std::sync::LazyLock;

pub(super) fn find(t: &str, p: &Pre, hit: &mut Hit<'_>) -> bool {
    let b = t.as_bytes();
    (p.dashes < 10 || private_key(t, hit))
        && (p.max_run < 16 || prefixed(t, hit))
        && (p.dots < 2 || !p.jwt_head || jwt(t, hit))
        && (p.spaces == 0
            || !p.has_letters(mask(b"basic"))
            || !contains_ci(b, b"basic")
            || basic(t, hit))
        && (p.spaces == 0
            || !p.has_letters(mask(b"bearer"))
            || !contains_ci(b, b"bearer")
            || bearer(t, hit))
        && (!p.at || p.colons < 2 || memchr::memmem::find(b, b"://").is_none() || userinfo(t, hit))
        && password_words(b, p, |pw| {
            (!p.kv || !(pw || key_word(b, p)) || assigned(t, hit))
                && (!sas_possible(b, p) || sas_signature(t, hit))
                && (p.spaces == 0 || !pw || spoken_password(t, hit))
        })
}

/// Calls `f` with whether `pass` or `pwd` occurs, searched for once (assigned() and
/// spoken_password() both need it) and only where `f` can use it.
fn password_words(b: &[u8], p: &Pre, f: impl FnOnce(bool) -> bool) -> bool {
    let pw = (p.kv || p.spaces > 0)
        && ((p.has_letters(mask(b"pas")) && contains_ci(b, b"pass"))
            || (p.has_letters(mask(b"pwd")) && contains_ci(b, b"pwd")));
    f(pw)
}

/// Every name [`ASSIGNED`] knows contains `pass`, `pwd` or one of these; the regex runs
/// only if one is there. Each word's letters are checked before it is searched for.
const KEY_WORDS: [(&[u8], u32); 4] = [
    (b"secret", mask(b"secret")),
    (b"token", mask(b"token")),
    (b"key", mask(b"key")),
    (b"credential", mask(b"credential")),
];

fn key_word(b: &[u8], p: &Pre) -> bool {
    KEY_WORDS
        .iter()
        .any(|&(w, m)| p.has_letters(m) && contains_ci(b, w))
}

static PREFIXED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:",
        // AWS access key ids (long-term AKIA, temporary ASIA, and the other principals).
        r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA|A3T[A-Z0-9])[A-Z0-9]{16}(?-u:\b)",
        // GitHub classic and fine-grained tokens.
        r"|gh[pousr]_[A-Za-z0-9]{20,251}|github_pat_[A-Za-z0-9_]{22,255}",
        // Slack tokens and webhooks.
        r"|xox[abposre]-[A-Za-z0-9-]{10,250}|xapp-[0-9]-[A-Za-z0-9-]{10,250}",
        r"|https?://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/+-]{16,}",
        // Stripe keys and webhook signing secrets.
        r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,247}|whsec_[A-Za-z0-9+/=]{20,}",
        // OpenAI (sk-, sk-proj-, sk-svcacct-, sk-admin-) and Anthropic (sk-ant-) keys.
        r"|sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
        // npm, GitLab, Google API keys.
        r"|npm_[A-Za-z0-9]{36}(?-u:\b)",
        r"|(?:glpat|gldt|glrt|glptt|glsoat|glcbt|glffct|gloas|glimt|glagent)-[A-Za-z0-9_-]{20,}",
        r"|AIza[0-9A-Za-z_-]{35}",
        // SendGrid API keys: `SG.`, a 22-character id, '.', a 43-character secret.
        r"|SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
        r")",
    ))
    .expect("static key patterns compile")
});

/// Has letters and digits, or both cases over 12+ characters: not a word or a name.
fn looks_random(v: &[u8], min_len: usize) -> bool {
    if v.len() < min_len {
        return false;
    }
    let (mut lower, mut upper, mut digit) = (false, false, false);
    for c in v {
        lower |= c.is_ascii_lowercase();
        upper |= c.is_ascii_uppercase();
        digit |= c.is_ascii_digit();
    }
    (digit && (lower || upper)) || (lower && upper && v.len() >= 12)
}

/// A literal start of one of [`PREFIXED`]'s shapes begins `b`: the regex runs only where
/// one begins a word. Chosen by the first byte, so a candidate costs a compare or two.
fn prefix_at(b: &[u8]) -> bool {
    let any = |ps: &[&[u8]]| ps.iter().any(|p| b.starts_with(p));
    match b[0] {
        b'A' => {
            // AWS key ids (AKIA, ASIA, … and A3T…) and Google's AIza.
            b.len() >= 4
                && (matches!(
                    &b[..4],
                    b"AKIA"
                        | b"ASIA"
                        | b"ABIA"
                        | b"ACCA"
                        | b"AGPA"
                        | b"AIDA"
                        | b"AIPA"
                        | b"ANPA"
                        | b"ANVA"
                        | b"AROA"
                        | b"APKA"
                        | b"ASCA"
                        | b"AIza"
                ) || b[..3] == *b"A3T")
        }
        b'g' => any(&[b"gh", b"gl", b"github_pat_"]),
        b'x' => any(&[b"xox", b"xapp-"]),
        b'h' => any(&[b"https://hooks.slack.com/", b"http://hooks.slack.com/"]),
        b's' => any(&[b"sk_", b"sk-"]),
        b'p' => any(&[b"pk_"]),
        b'r' => any(&[b"rk_"]),
        b'w' => any(&[b"whsec_"]),
        b'n' => any(&[b"npm_"]),
        b'S' => any(&[b"SG."]),
        _ => false,
    }
}

fn prefixed(t: &str, hit: &mut Hit<'_>) -> bool {
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let starts = matches!(
            b[i],
            b'A' | b'g' | b'x' | b'h' | b's' | b'p' | b'r' | b'w' | b'n' | b'S'
        ) && !is_word_before(b, i)
            && prefix_at(&b[i..]);
        if starts {
            if let Some(m) = PREFIXED.find(&t[i..]) {
                let v = m.as_str().as_bytes();
                // `sk-` also starts ordinary names (`sk-learn-pipeline`): a key has digits.
                if !v.starts_with(b"sk-") || looks_random(&v[3..], 20) {
                    emit!(hit, i..i + m.end(), PiiKind::ApiKey);
                }
                // Refused or not, what it matched is done with: a later start inside it
                // would only find a suffix of the same token (and rescanning each would be
                // quadratic on `sk-sk-sk-…`).
                i += m.end();
                continue;
            }
        }
        i += 1;
    }
    true
}

static PEM_BEGIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----")
        .expect("static PEM pattern compiles")
});
static PEM_END: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----")
        .expect("static PEM pattern compiles")
});

/// A PEM private key block, to its END line or, if cut off, to the end of the text.
fn private_key(t: &str, hit: &mut Hit<'_>) -> bool {
    if memchr::memmem::find(t.as_bytes(), b"-----BEGIN").is_none() {
        return true;
    }
    let mut at = 0;
    while let Some(m) = PEM_BEGIN.find_at(t, at) {
        let end = PEM_END.find_at(t, m.end()).map_or(t.len(), |e| e.end());
        emit!(hit, m.start()..end, PiiKind::PrivateKey);
        at = end;
        if at >= t.len() {
            break;
        }
    }
    true
}

const B64URL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// The header decodes to a JSON object that names `alg`.
fn jose_header(seg: &[u8]) -> bool {
    // '{' encodes to 'e'; leading whitespace to 'I' (space), 'C' (tab, LF) or 'D' (CR).
    if seg.len() > 4096 || !matches!(seg.first(), Some(b'e' | b'I' | b'C' | b'D')) {
        return false;
    }
    let Ok(h) = B64URL.decode(seg) else {
        return false;
    };
    let json = h.trim_ascii_start();
    json.first() == Some(&b'{') && memchr::memmem::find(json, b"\"alg\"").is_some()
}

/// JWS (three parts) or JWE (five) whose first part decodes to a JSON object naming
/// `alg`: whatever its whitespace, so the header need not start `eyJ`.
fn jwt(t: &str, hit: &mut Hit<'_>) -> bool {
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !is_b64url(b[i]) {
            i += 1;
            continue;
        }
        let s = i;
        while i < b.len() && is_b64url(b[i]) {
            i += 1;
        }
        let after_dot = s > 0 && b[s - 1] == b'.';
        if i - s < 14 || b.get(i) != Some(&b'.') || after_dot || !jose_header(&b[s..i]) {
            continue;
        }
        let mut end = i;
        let mut parts = 1;
        let mut second = 0;
        while parts < 5 && b.get(end) == Some(&b'.') {
            let mut k = end + 1;
            while k < b.len() && is_b64url(b[k]) {
                k += 1;
            }
            if parts == 1 {
                second = k - end - 1;
            }
            parts += 1;
            end = k;
        }
        if parts >= 3 && second >= 2 {
            emit!(hit, s..end, PiiKind::Jwt);
        }
        i = end;
    }
    true
}

static BASIC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?-u:\b)basic[ \t]+([A-Za-z0-9+/]{6,}={0,2})")
        .expect("static pattern compiles")
});

/// `Basic` and a base64 `user:password`: the decoded text must hold a ':' and be
/// printable, so "basic authentication" is not a credential.
fn basic(t: &str, hit: &mut Hit<'_>) -> bool {
    for c in BASIC.captures_iter(t) {
        let Some(v) = c.get(1) else { continue };
        let Ok(d) = base64::engine::general_purpose::STANDARD
            .decode(v.as_str())
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(v.as_str()))
        else {
            continue;
        };
        let printable =
            d.iter().all(|&b| b >= 0x20 && b != 0x7f) && std::str::from_utf8(&d).is_ok();
        if printable && d.contains(&b':') && d.len() >= 3 {
            emit!(hit, v.range(), PiiKind::Credentials);
        }
    }
    true
}

static BEARER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?-u:\b)bearer[ \t]+([A-Za-z0-9._~+/-]{8,}=*)")
        .expect("static pattern compiles")
});

fn bearer(t: &str, hit: &mut Hit<'_>) -> bool {
    for c in BEARER.captures_iter(t) {
        let Some(v) = c.get(1) else { continue };
        if looks_random(v.as_str().as_bytes(), 8) {
            emit!(hit, v.range(), PiiKind::BearerToken);
        }
    }
    true
}

static USERINFO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?-u:\b)[a-z][a-z0-9+.-]{1,15}://([^/\s:@]{0,64}:[^/\s@]{1,128})@")
        .expect("static pattern compiles")
});

/// `scheme://user:password@host` (the user may be empty): the user and password go.
fn userinfo(t: &str, hit: &mut Hit<'_>) -> bool {
    for c in USERINFO.captures_iter(t) {
        let Some(v) = c.get(1) else { continue };
        let pw = v.as_str().split_once(':').map_or("", |(_, p)| p);
        if !pw.is_empty() && !is_placeholder(pw) {
            emit!(hit, v.range(), PiiKind::Credentials);
        }
    }
    true
}

static ASSIGNED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)([A-Za-z0-9_.-]*?(?:(password|passwd|pwd|passphrase|credentials?)|",
        r"secret|token|api[_-]?key|apikey|access[_-]?key|secret[_-]?key|private[_-]?key|",
        r"signing[_-]?key|encryption[_-]?key|master[_-]?key|account[_-]?key|client[_-]?secret))",
        r#"["']?[ \t]*(?:=>|=|:)[ \t]*("[^"\n]*"|'[^'\n]*'|[^\s"',;]+)"#,
    ))
    .expect("static assignment pattern compiles")
});

/// Where `&name=` starts the next URL query parameter inside an unquoted value.
fn next_query_param(v: &str) -> Option<usize> {
    let b = v.as_bytes();
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'&', &b[from..]).map(|i| from + i) {
        let name = b[i + 1..]
            .iter()
            .take_while(|c| {
                c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'[' | b']')
            })
            .count();
        if name > 0 && b.get(i + 1 + name) == Some(&b'=') {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

/// Values that stand for no secret: empty-ish words, masks, templates, placeholders.
fn is_placeholder(v: &str) -> bool {
    const WORDS: &[&str] = &[
        "null",
        "none",
        "nil",
        "true",
        "false",
        "undefined",
        "redacted",
        "hidden",
        "masked",
        "empty",
        "n/a",
        "na",
        "unset",
        "required",
        "optional",
        "string",
        "yes",
        "no",
        "on",
        "off",
        "ok",
        "set",
        "missing",
        "invalid",
        "expired",
        "password",
        "secret",
        "token",
    ];
    let b = v.as_bytes();
    b.is_empty()
        || WORDS.iter().any(|w| v.eq_ignore_ascii_case(w))
        || matches!(b[0], b'$' | b'{' | b'<' | b'[' | b'%')
        || b.iter().all(|&c| c == b[0])
        || b.iter()
            .all(|&c| matches!(c, b'*' | b'x' | b'X' | b'.' | b'#' | b'-' | b'_'))
}

/// `password=…`, `"api_key": "…"`, `AWS_SECRET_ACCESS_KEY: …`, `csrf_token=…`: the value
/// goes, the name stays. Password-like names take any value that is not a placeholder;
/// token- and key-like names only values that look random, so `token_type=bearer` and
/// `api_key=missing` pass.
fn assigned(t: &str, hit: &mut Hit<'_>) -> bool {
    for c in ASSIGNED.captures_iter(t) {
        let (Some(name), Some(v)) = (c.get(1), c.get(3)) else {
            continue;
        };
        let mut r = v.range();
        let raw = v.as_str();
        if raw.len() >= 2 && (raw.starts_with('"') || raw.starts_with('\'')) {
            r = r.start + 1..r.end - 1;
        } else if let Some(amp) = next_query_param(raw) {
            // `?token=…&page=2`: the value ends where the next parameter starts.
            r = r.start..r.start + amp;
        }
        let val = &t[r.clone()];
        if is_placeholder(val) {
            continue;
        }
        let password_like = c.get(2).is_some();
        let pwd = name.as_str().len() >= 3
            && name.as_str()[name.as_str().len() - 3..].eq_ignore_ascii_case("pwd");
        let ok = if password_like {
            val.len() >= 3 && !(pwd && matches!(val.as_bytes()[0], b'/' | b'~' | b'.'))
        } else {
            looks_random(val.as_bytes(), 8)
        };
        if ok {
            emit!(hit, r, PiiKind::Secret);
        }
    }
    true
}

/// A `sig=` and an `sv=` may both be there, joined by '&' (which the prefilter counts
/// among the bytes that need normalizing): letters checked before any search.
fn sas_possible(b: &[u8], p: &Pre) -> bool {
    p.kv && p.needs_norm
        && p.has_letters(mask(b"sigv"))
        && contains_ci(b, b"sig=")
        && contains_ci(b, b"sv=")
}

/// The signature of an Azure shared access signature (`…?sv=2022-11-02&…&sig=…`, also as
/// a connection string's `SharedAccessSignature=sv=…&sig=…`): the value of `sig=` when the
/// text also names the SAS version `sv=` and joins parameters with '&'.
fn sas_signature(t: &str, hit: &mut Hit<'_>) -> bool {
    let b = t.as_bytes();
    if memchr::memchr(b'&', b).is_none() {
        return true; // parameters of a query string: `sv=…&sig=…`
    }
    for i in memchr::memmem::find_iter(b, b"sig=") {
        if i > 0 && !matches!(b[i - 1], b'?' | b'&' | b';') {
            continue;
        }
        let s = i + 4;
        let n = b[s..]
            .iter()
            .position(|&c| matches!(c, b'&' | b';' | b'"' | b'\'') || c.is_ascii_whitespace())
            .unwrap_or(b.len() - s);
        if looks_random(&b[s..s + n], 16) {
            emit!(hit, s..s + n, PiiKind::Secret);
        }
    }
    true
}

/// Words that name a password in prose.
const PASSWORD_WORDS: [&[u8]; 5] = [b"password", b"passphrase", b"passcode", b"passwd", b"pwd"];

/// Past up to three spaces or tabs from `j`.
fn past_spaces(b: &[u8], j: usize) -> usize {
    j + b[j.min(b.len())..]
        .iter()
        .take(3)
        .take_while(|c| matches!(c, b' ' | b'\t'))
        .count()
}

/// Past the words that may join a password word to its value in prose (`is`, `was`,
/// `set to`, `changed to`, `reset to`, `updated to`, then an optional ':') from `j`.
fn past_fillers(b: &[u8], mut j: usize) -> usize {
    let word_at = |j: usize, w: &[u8]| {
        starts_ci(b, j, w) && !b.get(j + w.len()).is_some_and(u8::is_ascii_alphanumeric)
    };
    if let Some(w) = [&b"is"[..], b"was"].into_iter().find(|w| word_at(j, w)) {
        j = past_spaces(b, j + w.len());
    } else if let Some(w) = [&b"set"[..], b"changed", b"reset", b"updated"]
        .into_iter()
        .find(|w| word_at(j, w))
    {
        let k = past_spaces(b, j + w.len());
        if k > j + w.len() && word_at(k, b"to") {
            j = past_spaces(b, k + 2);
        }
    }
    if b.get(j) == Some(&b':') {
        j = past_spaces(b, j + 1);
    }
    j
}

/// A password given in prose: a password word (`password`, `passwd`, `passphrase`,
/// `passcode`, `pwd`) followed by a space, optionally `is`/`was`/`set to`…, then a value
/// with a digit or a symbol: `passwd hunter2`, `the password is hunter2`, `password set to
/// Winter2026!`. A value of letters only is a word (`password reset requested`, `password
/// is incorrect`), so it is not taken; nor a path (`pwd /home/app`), an option
/// (`pwd -P`), an issue (`#1234`), a version (`3.5.5`), a URL or a placeholder.
/// `password_changed`, `passwordless`, `passwords`, `base-passwd` are other words.
fn spoken_password(t: &str, hit: &mut Hit<'_>) -> bool {
    let b = t.as_bytes();
    let mut from = 0;
    while let Some(off) = memchr::memchr2(b'p', b'P', &b[from..]) {
        let i = from + off;
        from = i + 1;
        let Some(w) = PASSWORD_WORDS.iter().find(|w| starts_ci(b, i, w)) else {
            continue;
        };
        let k = i + w.len();
        // A word of its own, followed by a space: not `base-passwd (3.5.5)`, `mypassword`,
        // `password=` (assigned() reads that) or `password_changed`.
        let glued = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'-');
        if glued || !matches!(b.get(k), Some(b' ' | b'\t')) {
            continue;
        }
        let mut s = past_fillers(b, past_spaces(b, k));
        let n = b[s..]
            .iter()
            .take(129)
            .take_while(|c| !c.is_ascii_whitespace())
            .count();
        let mut e = s + n;
        if n > 128 {
            continue;
        }
        // A sentence's punctuation after it, brackets around it, quotes only in pairs: in
        // `"passwd ".to_owned()` a string ends, no value starts.
        while e > s && matches!(b[e - 1], b')' | b']' | b'.' | b',' | b';' | b':') {
            e -= 1;
        }
        while s < e && matches!(b[s], b'(' | b'[') {
            s += 1;
        }
        if let Some(&q @ (b'"' | b'\'' | b'`')) = b.get(s).filter(|_| s < e) {
            if e - s < 2 || b[e - 1] != q {
                continue;
            }
            (s, e) = (s + 1, e - 1);
        } else if e > s && matches!(b[e - 1], b'"' | b'\'' | b'`') {
            e -= 1;
        }
        let v = &b[s..e];
        let symbol = |c: &u8| c.is_ascii_punctuation() && !matches!(c, b'-' | b'_' | b'\'' | b'.');
        let version = v.iter().all(|&c| c.is_ascii_digit() || c == b'.') && v.contains(&b'.');
        // Not a path, an option, an issue number, a version, a URL or a placeholder.
        let ok = v.len() >= 4
            && v.iter().any(|c| c.is_ascii_digit() || symbol(c))
            && !matches!(v[0], b'/' | b'~' | b'.' | b'-' | b'#')
            && !version
            && memchr::memmem::find(v, b"://").is_none()
            && std::str::from_utf8(v).is_ok_and(|v| !is_placeholder(v));
        if ok {
            emit!(hit, s..e, PiiKind::Secret);
            from = e;
        }
    }
    true
}
