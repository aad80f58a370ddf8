//! Reading the knock request's query string: `time`, `code` and the
//! optional `nonce`, with the limits that keep hostile input cheap.

use crate::teapot::Reason;

/// Longest query string looked at; anything longer is refused unread.
pub const MAX_QUERY_BYTES: usize = 1024;
/// Longest accepted nonce (design: 1-64 characters of `[A-Za-z0-9_-]`).
pub const MAX_NONCE_CHARS: usize = 64;
/// u64 seconds never need more digits than this.
const MAX_TIME_DIGITS: usize = 19;

/// The parameters of a knock request, syntactically valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnockQuery {
    /// The time exactly as sent: it is hashed as text, like the legacy script.
    pub time_text: String,
    pub time: u64,
    pub code: String,
    pub nonce: Option<String>,
}

/// Parses a raw query string. Unknown parameters are ignored, as the legacy
/// script ignored them; a repeated known one is refused, since which copy
/// counts would otherwise depend on the parser.
pub fn parse(raw: &str) -> Result<KnockQuery, Reason> {
    if raw.len() > MAX_QUERY_BYTES {
        return Err(Reason::QueryTooLong);
    }
    let (mut time, mut code, mut nonce) = (None, None, None);
    for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        let slot = match key.as_ref() {
            "time" => &mut time,
            "code" => &mut code,
            "nonce" => &mut nonce,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(Reason::DuplicateParam);
        }
    }
    let time_text = time.filter(|t| !t.is_empty()).ok_or(Reason::MissingTime)?;
    let code = code.filter(|c| !c.is_empty()).ok_or(Reason::MissingCode)?;
    let time = parse_time(&time_text)?;
    if nonce.as_deref().is_some_and(|n| !valid_nonce(n)) {
        return Err(Reason::BadNonce);
    }
    Ok(KnockQuery {
        time_text,
        time,
        code,
        nonce,
    })
}

/// Decimal digits only (no sign, no space, no exponent), and not zero:
/// the legacy script treated 0 as missing.
fn parse_time(text: &str) -> Result<u64, Reason> {
    if text.len() > MAX_TIME_DIGITS || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reason::BadTime);
    }
    match text.parse::<u64>() {
        Ok(0) | Err(_) => Err(Reason::BadTime),
        Ok(t) => Ok(t),
    }
}

pub fn valid_nonce(nonce: &str) -> bool {
    (1..=MAX_NONCE_CHARS).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_query_parses() {
        let q = parse("time=1700000000&code=abc").unwrap();
        assert_eq!(
            (q.time, q.time_text.as_str(), q.code.as_str()),
            (1_700_000_000, "1700000000", "abc")
        );
        assert_eq!(q.nonce, None);
    }

    #[test]
    fn unknown_parameters_are_ignored_and_order_does_not_matter() {
        let q = parse("x=1&code=abc&nonce=n-1_A&time=5").unwrap();
        assert_eq!(
            (q.time, q.code.as_str(), q.nonce.as_deref()),
            (5, "abc", Some("n-1_A"))
        );
    }

    #[test]
    fn each_malformed_query_gets_its_reason() {
        let long = format!("time=1&code={}", "a".repeat(MAX_QUERY_BYTES));
        let cases: &[(&str, Reason)] = &[
            ("", Reason::MissingTime),
            ("code=abc", Reason::MissingTime),
            ("time=&code=abc", Reason::MissingTime),
            ("time=5", Reason::MissingCode),
            ("time=5&code=", Reason::MissingCode),
            ("time=0&code=abc", Reason::BadTime),
            ("time=000&code=abc", Reason::BadTime),
            ("time=-5&code=abc", Reason::BadTime),
            ("time=%2B5&code=abc", Reason::BadTime),
            ("time=5.0&code=abc", Reason::BadTime),
            ("time=1e9&code=abc", Reason::BadTime),
            ("time=%205&code=abc", Reason::BadTime),
            ("time=99999999999999999999&code=abc", Reason::BadTime),
            ("time=5&code=abc&time=6", Reason::DuplicateParam),
            ("time=5&code=abc&code=abc", Reason::DuplicateParam),
            ("time=5&code=abc&nonce=a&nonce=b", Reason::DuplicateParam),
            ("time=5&code=abc&nonce=", Reason::BadNonce),
            ("time=5&code=abc&nonce=a%20b", Reason::BadNonce),
            ("time=5&code=abc&nonce=a.b", Reason::BadNonce),
            (long.as_str(), Reason::QueryTooLong),
        ];
        for (raw, reason) in cases {
            assert_eq!(parse(raw), Err(*reason), "query {raw:?}");
        }
    }

    #[test]
    fn a_nonce_of_64_characters_is_accepted_and_65_refused() {
        assert!(valid_nonce(&"a".repeat(64)));
        assert!(!valid_nonce(&"a".repeat(65)));
    }
}
