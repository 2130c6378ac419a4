//! Reason codes: every event the door refuses gets one, plus a sentence that never
//! quotes the value it refused.

use serde::Serialize;

/// Machine-readable reason an event was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    MalformedJson,
    InvalidUtf8,
    TooLarge,
    TooDeep,
    MalformedEnvelope,
    TooManyAttributes,
    DuplicateField,
    UnknownEvent,
    NotAllowedForSource,
    InvalidTime,
    TimeInFuture,
    TimeTooOld,
    EpochShredded,
    FieldNotAllowed,
    MissingField,
    WrongType,
    ValueNotAllowed,
    TooLong,
    OutOfRange,
    PiiDetected,
    /// The event's window is already sealed for at least one of its collection's metrics.
    Late,
    /// The person the event is about opted out: dropped at the door, counted.
    OptedOut,
    /// A collection on consent, from a source that has not attested consent.
    ConsentMissing,
}

impl Reason {
    /// The snake_case code used in summaries, quarantine rows and API answers.
    pub fn code(self) -> &'static str {
        match self {
            Reason::MalformedJson => "malformed_json",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::TooLarge => "too_large",
            Reason::TooDeep => "too_deep",
            Reason::MalformedEnvelope => "malformed_envelope",
            Reason::TooManyAttributes => "too_many_attributes",
            Reason::DuplicateField => "duplicate_field",
            Reason::UnknownEvent => "unknown_event",
            Reason::NotAllowedForSource => "not_allowed_for_source",
            Reason::InvalidTime => "invalid_time",
            Reason::TimeInFuture => "time_in_future",
            Reason::TimeTooOld => "time_too_old",
            Reason::EpochShredded => "epoch_shredded",
            Reason::FieldNotAllowed => "field_not_allowed",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::ValueNotAllowed => "value_not_allowed",
            Reason::TooLong => "too_long",
            Reason::OutOfRange => "out_of_range",
            Reason::PiiDetected => "pii_detected",
            Reason::Late => "late",
            Reason::OptedOut => "opted_out",
            Reason::ConsentMissing => "consent_missing",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The sentence of a `late` rejection.
pub(crate) const LATE_MESSAGE: &str = "the event's time falls in a window that is already sealed; its numbers are final (see docs/backfill.md)";

/// A refused event: what quarantine keeps of it. Holds a reason code, a fixed sentence,
/// the collection and field *names* — never a value. Only the door makes one (the fields
/// are private; [`Rejection::late`] takes nothing but a declared collection), so nothing
/// else can put a value into a rejection by accident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    reason: Reason,
    message: String,
    collection: Option<String>,
    field_names: Vec<String>,
    /// For `late`: the UTC day (its start) the event's time fell on, so a report can say
    /// which sealed window missed events. A day, never the time itself.
    late_day: Option<i64>,
}

impl Rejection {
    pub(crate) fn new(reason: Reason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
            collection: None,
            field_names: Vec::new(),
            late_day: None,
        }
    }

    /// The rejection of an event whose window is already sealed (`late`). Public because
    /// the store re-checks at commit (a seal may have run since the door looked); it takes
    /// only a declared collection, so it can carry no value either.
    pub fn late(collection: Option<&veil_policy::Collection>) -> Self {
        Rejection::new(Reason::Late, LATE_MESSAGE)
            .with_names(collection.map(|c| c.name.clone()), Vec::new())
    }

    /// Marks a `late` rejection with the UTC day of the event's time (`time` is generalized
    /// to the day here).
    pub fn on_day(mut self, time: i64) -> Self {
        if self.reason == Reason::Late {
            self.late_day = Some(time - time.rem_euclid(86_400));
        }
        self
    }

    /// For `late`: the UTC day the event's time fell on.
    pub fn late_day(&self) -> Option<i64> {
        self.late_day
    }

    pub(crate) fn with_names(
        mut self,
        collection: Option<String>,
        field_names: Vec<String>,
    ) -> Self {
        self.collection = collection;
        self.field_names = field_names;
        self
    }

    /// Machine-readable reason.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// A human sentence; names fields but never quotes a value.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The collection, when the event named a declared one.
    pub fn collection(&self) -> Option<&str> {
        self.collection.as_deref()
    }

    /// Attribute names seen in the event, each either declared or shown as `<redacted>`
    /// when the name itself could carry personal data.
    pub fn field_names(&self) -> &[String] {
        &self.field_names
    }
}

/// First segments of dotted attribute names that are namespaces, not people: the
/// OpenTelemetry semantic conventions and common telemetry prefixes. `john.smith` is not
/// in this list; `http.method` is.
const NAMESPACES: &[&str] = &[
    "app",
    "browser",
    "client",
    "cloud",
    "code",
    "container",
    "db",
    "deployment",
    "device",
    "enduser",
    "error",
    "event",
    "exception",
    "faas",
    "feature",
    "file",
    "gen_ai",
    "host",
    "http",
    "k8s",
    "log",
    "messaging",
    "net",
    "network",
    "os",
    "otel",
    "peer",
    "process",
    "rpc",
    "server",
    "service",
    "session",
    "source",
    "span",
    "telemetry",
    "thread",
    "tls",
    "trace",
    "url",
    "user",
    "user_agent",
    "vcs",
    "webengine",
];

/// A name safe to repeat in a message or store in quarantine: one that looks like a code
/// identifier (`duration_ms`, `retryCount`, `http.request.method`, `k8s.pod.name`).
/// Anything else — a name that could itself be personal data, such as `john.smith`,
/// `Jane.Doe`, an address, a number — becomes `<redacted>`.
pub fn safe_name(name: &str) -> String {
    let ascii = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        && crate::pii::first(name).is_none()
        && name.bytes().filter(|b| b.is_ascii_digit()).count() < 6;
    if ascii && looks_like_code(name) {
        name.to_owned()
    } else {
        "<redacted>".to_owned()
    }
}

/// Shapes of code identifiers. A dotted name of two plain words outside a known
/// namespace (`firstname.lastname`), or a dotted name whose segments start with capitals
/// (`John.Smith`), is the shape of a person's name and is refused.
fn looks_like_code(name: &str) -> bool {
    let segments: Vec<&str> = name.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return false;
    }
    if segments.len() == 1 {
        return true; // one word: `duration_ms`, `retryCount`, `label`
    }
    let capitalized = segments
        .iter()
        .filter(|s| s.as_bytes()[0].is_ascii_uppercase())
        .count();
    if capitalized >= 2 {
        return false;
    }
    let plain_word = |s: &str| s.len() >= 2 && s.bytes().all(|b| b.is_ascii_alphabetic());
    if segments.len() == 2
        && segments.iter().all(|s| plain_word(s))
        && !NAMESPACES.contains(&segments[0].to_ascii_lowercase().as_str())
    {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::safe_name;

    #[test]
    fn only_code_shaped_names_are_kept() {
        for ok in [
            "duration_ms",
            "retryCount",
            "http.request.method",
            "code.file.path",
            "k8s.pod.name",
            "user.id",
            "log.file.name",
            "feature_flag",
            "db.system",
        ] {
            assert_eq!(safe_name(ok), ok);
        }
        for bad in [
            "john.smith",
            "Jane.Doe",
            "margarethe.vandersloot",
            "alice@example.com",
            "first last",
            "+441234567890",
            "",
            "a..b",
        ] {
            assert_eq!(safe_name(bad), "<redacted>", "{bad}");
        }
    }
}
