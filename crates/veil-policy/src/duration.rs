//! `Nd`, `Nh`, `Nm` durations, the only form the policy accepts.

use crate::model::Secs;

/// Parses `14d`, `12h` or `30m` into seconds; anything else is `None`.
pub fn parse(s: &str) -> Option<Secs> {
    let s = s.trim();
    // The unit is the last character, whatever its width: a byte index could split one.
    let unit = s.chars().next_back()?;
    let num = &s[..s.len() - unit.len_utf8()];
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = num.parse().ok()?;
    let mult = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// "14-day", "12-hour", "30-minute": for purpose sentences.
pub fn human(secs: Secs) -> String {
    if secs % 86_400 == 0 {
        format!("{}-day", secs / 86_400)
    } else if secs % 3_600 == 0 {
        format!("{}-hour", secs / 3_600)
    } else {
        format!("{}-minute", secs / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_the_rest() {
        assert_eq!(parse("14d"), Some(14 * 86_400));
        assert_eq!(parse("2h"), Some(7_200));
        // Any text, never a panic: multi-byte characters where a unit or digit would be.
        for s in [
            "\u{80}", "1\u{80}", "é", "1é", "ｄ", "1ｄ", "１d", "", " ", "d",
        ] {
            assert_eq!(parse(s), None, "{s:?}");
        }
        assert_eq!(parse("5m"), Some(300));
        for bad in ["", "d", "14", "14w", "-1d", "1.5d", "14 d x"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(human(14 * 86_400), "14-day");
    }
}
