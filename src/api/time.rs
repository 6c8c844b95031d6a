//! Times on the wire: RFC 3339 text, as the contract's `date-time`.

use bson::DateTime;

/// A stored time as RFC 3339 (the epoch when missing, which stored documents never are).
pub fn text(at: Option<&DateTime>) -> String {
    at.copied()
        .unwrap_or(DateTime::from_millis(0))
        .try_to_rfc3339_string()
        .unwrap_or_default()
}

/// RFC 3339 text as a time.
pub fn parse(text: &str) -> Option<DateTime> {
    DateTime::parse_rfc3339_str(text).ok()
}
