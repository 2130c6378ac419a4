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
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A refused event: what quarantine keeps of it. Holds names, never values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    pub reason: Reason,
    /// A human sentence; names fields but never quotes a value.
    pub message: String,
    /// The collection, when the event named a declared one.
    pub collection: Option<String>,
    /// Attribute names seen in the event, each either declared or shown as `<redacted>`
    /// when the name itself could carry personal data.
    pub field_names: Vec<String>,
}

impl Rejection {
    pub(crate) fn new(reason: Reason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
            collection: None,
            field_names: Vec::new(),
        }
    }
}

/// A name safe to repeat in a message or quarantine: a plain identifier with nothing
/// that looks like personal data; anything else becomes `<redacted>`.
pub fn safe_name(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        && crate::pii::first(name).is_none()
        && name.bytes().filter(|b| b.is_ascii_digit()).count() < 6;
    if plain {
        name.to_owned()
    } else {
        "<redacted>".to_owned()
    }
}
