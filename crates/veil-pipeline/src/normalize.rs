//! Text normalization before pseudonymizing and scanning (placeholder until the full
//! Unicode normalization lands).

use std::borrow::Cow;

/// A direct identifier normalized so one person is one contributor.
pub fn identifier(s: &str, email_casefold: bool) -> Cow<'_, str> {
    let t = s.trim();
    if email_casefold && t.contains('@') && t.bytes().any(|b| b.is_ascii_uppercase()) {
        return Cow::Owned(t.to_lowercase());
    }
    Cow::Borrowed(t)
}
