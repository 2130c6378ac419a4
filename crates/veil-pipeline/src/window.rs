//! Metric windows in UTC: a day, an ISO week (Monday start) or a calendar month.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use veil_policy::Window;

fn date_of(t: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp(t, 0)
        .map(|d| d.date_naive())
        .unwrap_or(NaiveDate::MIN)
}

fn ts(d: NaiveDate) -> i64 {
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"))
        .timestamp()
}

/// Start (unix seconds) of the window containing `t`.
pub fn start(w: Window, t: i64) -> i64 {
    // Day and week are plain arithmetic on the hot path; 1970-01-01 was a Thursday.
    const DAY: i64 = 86_400;
    match w {
        Window::Day => t - t.rem_euclid(DAY),
        Window::Week => {
            let day = t.div_euclid(DAY);
            (day - (day + 3).rem_euclid(7)) * DAY
        }
        Window::Month => ts(date_of(t).with_day(1).expect("day 1 exists")),
    }
}

/// Start of the window after the one starting at `s`.
pub fn end(w: Window, s: i64) -> i64 {
    let d = date_of(s);
    match w {
        Window::Day => ts(d + Duration::days(1)),
        Window::Week => ts(d + Duration::days(7)),
        Window::Month => {
            let (y, m) = if d.month() == 12 {
                (d.year() + 1, 1)
            } else {
                (d.year(), d.month() + 1)
            };
            ts(NaiveDate::from_ymd_opt(y, m, 1).expect("first of month exists"))
        }
    }
}

/// "2026-11-20", "2026-W47" or "2026-11" for the window starting at `s`.
pub fn label(w: Window, s: i64) -> String {
    let d = date_of(s);
    match w {
        Window::Day => d.format("%Y-%m-%d").to_string(),
        Window::Week => {
            let iw = d.iso_week();
            format!("{}-W{:02}", iw.year(), iw.week())
        }
        Window::Month => d.format("%Y-%m").to_string(),
    }
}

/// The start of the window a [`label`] names, whatever its kind (the shapes differ:
/// `2026-03-02`, `2026-W10`, `2026-03`); `None` for anything else.
pub fn parse_label(label: &str) -> Option<i64> {
    if let Ok(d) = NaiveDate::parse_from_str(label, "%Y-%m-%d") {
        return Some(ts(d));
    }
    if let Some((y, w)) = label.split_once("-W") {
        let d = NaiveDate::from_isoywd_opt(y.parse().ok()?, w.parse().ok()?, chrono::Weekday::Mon)?;
        return Some(ts(d));
    }
    NaiveDate::parse_from_str(&format!("{label}-01"), "%Y-%m-%d")
        .ok()
        .map(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_back_to_their_window_start() {
        for w in [Window::Day, Window::Week, Window::Month] {
            for t in (-40 * 86_400..900 * 86_400i64).step_by(86_399) {
                let s = start(w, t);
                assert_eq!(parse_label(&label(w, s)), Some(s), "{w:?} {t}");
            }
        }
        for bad in ["", "2026", "2026-W99", "2026-13", "x-W01", "2026-02-30"] {
            assert_eq!(parse_label(bad), None, "{bad}");
        }
    }

    #[test]
    fn arithmetic_starts_agree_with_the_calendar() {
        for t in (-400 * 86_400..800 * 86_400i64).step_by(3_607) {
            let d = date_of(t);
            assert_eq!(start(Window::Day, t), ts(d));
            assert_eq!(
                start(Window::Week, t),
                ts(d - Duration::days(d.weekday().num_days_from_monday() as i64)),
                "t={t}"
            );
        }
    }

    #[test]
    fn weeks_start_on_monday_and_label_iso() {
        let t = Utc
            .with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
            .unwrap()
            .timestamp(); // a Friday
        let s = start(Window::Week, t);
        assert_eq!(date_of(s), NaiveDate::from_ymd_opt(2026, 11, 16).unwrap());
        assert_eq!(label(Window::Week, s), "2026-W47");
        assert_eq!(end(Window::Week, s) - s, 7 * 86_400);
        let m = start(Window::Month, t);
        assert_eq!(label(Window::Month, m), "2026-11");
        assert_eq!(label(Window::Month, end(Window::Month, m)), "2026-12");
        assert_eq!(label(Window::Day, start(Window::Day, t)), "2026-11-20");
    }
}
