//! The validators every resource shares: each failure is a 400 whose message starts with the
//! field (`phoneNumbers[0].number: must not be empty`), as `docs/api.md` promises.
//! `tests/integration/api/validation.rs` walks the contract's constraints for every field the
//! served request schemas accept and checks each is refused this way.

use super::error::{ApiError, ApiResult};

/// A 400 naming `field`.
pub fn bad(field: &str, why: &str) -> ApiError {
    ApiError::BadRequest(format!("{field}: {why}"))
}

/// `value` trimmed, refused when nothing is left (the contract's `minLength: 1`).
///
/// # Errors
/// 400 naming the field.
pub fn non_empty<'a>(field: &str, value: &'a str) -> ApiResult<&'a str> {
    let value = value.trim();
    if value.is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    Ok(value)
}

/// `value` when it is one of `allowed` (the contract's `enum`).
///
/// # Errors
/// 400 naming the field and the allowed values.
pub fn one_of<'a>(field: &str, value: &'a str, allowed: &[&str]) -> ApiResult<&'a str> {
    if allowed.contains(&value) {
        Ok(value)
    } else {
        Err(bad(field, &format!("must be one of {allowed:?}")))
    }
}

/// Refuses a list holding the same item twice (the contract's `uniqueItems`).
///
/// # Errors
/// 400 naming the field.
pub fn unique<T: PartialEq>(field: &str, items: &[T]) -> ApiResult<()> {
    match (1..items.len()).find(|&i| items[..i].contains(&items[i])) {
        Some(_) => Err(bad(field, "items must be unique")),
        None => Ok(()),
    }
}

/// A plausible email address, lower-cased (addresses are compared lower-cased): valid for
/// the `email_address` crate (RFC 5321/5322, what the contract's `format: email` means), with a
/// dotted domain and no white space or control characters.
///
/// # Errors
/// 400 naming the field.
pub fn email(field: &str, value: &str) -> ApiResult<String> {
    let value = value.trim();
    let plausible = value.len() <= 254
        && !value.contains(|c: char| c.is_whitespace() || c.is_control())
        && email_address::EmailAddress::is_valid(value)
        && value.rsplit_once('@').is_some_and(|(_, domain)| {
            domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        });
    if plausible {
        Ok(value.to_lowercase())
    } else {
        Err(bad(field, "must be an email address"))
    }
}

/// A calendar date `YYYY-MM-DD` (the contract's `format: date`) between 1900 and 2200, the
/// range a birth date can take.
///
/// # Errors
/// 400 naming the field.
pub fn date<'a>(field: &str, value: &'a str) -> ApiResult<&'a str> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    match time::Date::parse(value, format) {
        Ok(day) if (1900..=2200).contains(&day.year()) => Ok(value),
        _ => Err(bad(field, "must be a date, YYYY-MM-DD")),
    }
}

/// An absolute `http(s)` URI with a host (the contract's `format: uri`, for web sites), as the
/// `url` crate (WHATWG URL) parses it, and written without white space.
///
/// # Errors
/// 400 naming the field.
pub fn web_uri<'a>(field: &str, value: &'a str) -> ApiResult<&'a str> {
    let parsed = reqwest::Url::parse(value).ok();
    let ok = parsed.is_some_and(|url| {
        matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty())
    }) && !value.contains(|c: char| c.is_whitespace() || c.is_control());
    if ok {
        Ok(value)
    } else {
        Err(bad(field, "must be an http(s) URI"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_calendar_days_in_range() {
        assert!(date("d", "2000-02-29").is_ok());
        for wrong in [
            "1900-02-29",
            "2023-13-01",
            "2023-1-01",
            "1899-12-31",
            "2023-04-31",
            "",
        ] {
            assert!(date("d", wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn emails_are_plausible_and_lower_cased() {
        assert_eq!(
            email("e", " A.B@Example.ORG ").expect("valid"),
            "a.b@example.org"
        );
        for wrong in [
            "a@b",
            "a b@c.org",
            "a@c.org\0",
            "@c.org",
            "a@.org",
            "a@org.",
            "abc",
        ] {
            assert!(email("e", wrong).is_err(), "{wrong:?}");
        }
    }

    #[test]
    fn web_sites_are_http_uris_with_a_host() {
        assert!(web_uri("w", "https://example.org/a?b=c").is_ok());
        for wrong in [
            "http://[",
            "https://",
            "ftp://example.org",
            "example.org",
            "http://a b",
        ] {
            assert!(web_uri("w", wrong).is_err(), "{wrong:?}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let error = one_of("clinicSize", "huge", &["0-249"]).expect_err("not allowed");
        assert!(error.to_string().starts_with("clinicSize: "), "{error}");
        assert!(unique("roles", &["a", "b", "a"]).is_err());
        assert!(unique("roles", &["a", "b"]).is_ok());
        assert!(non_empty("name", "  ").is_err());
    }
}
