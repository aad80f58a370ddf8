//! The teapot: the one answer for every request that cannot be verified.
//! Every reason gets the same bytes, so a client learns nothing about
//! which check failed; the reason goes to the log only.

use std::fmt;

/// The body the legacy script's 418 resembled; identical for every reason.
pub const BODY: &str = "<html>\r\n<head><title>418 I'm a teapot</title></head>\r\n\
<body>\r\n<center><h1>418 I'm a teapot</h1></center>\r\n</body>\r\n</html>\r\n";

/// Why a request got the teapot. `as_str` is the `reason=` of the log line
/// that fail2ban matches, so these names are part of the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    BadMethod,
    QueryTooLong,
    DuplicateParam,
    MissingTime,
    MissingCode,
    BadTime,
    BadNonce,
    TimeTooOld,
    TimeInFuture,
    BadCode,
    Replay,
    BadAddressHeader,
    OverBudget,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::BadMethod,
        Reason::QueryTooLong,
        Reason::DuplicateParam,
        Reason::MissingTime,
        Reason::MissingCode,
        Reason::BadTime,
        Reason::BadNonce,
        Reason::TimeTooOld,
        Reason::TimeInFuture,
        Reason::BadCode,
        Reason::Replay,
        Reason::BadAddressHeader,
        Reason::OverBudget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadMethod => "bad-method",
            Reason::QueryTooLong => "query-too-long",
            Reason::DuplicateParam => "duplicate-param",
            Reason::MissingTime => "missing-time",
            Reason::MissingCode => "missing-code",
            Reason::BadTime => "bad-time",
            Reason::BadNonce => "bad-nonce",
            Reason::TimeTooOld => "time-too-old",
            Reason::TimeInFuture => "time-in-future",
            Reason::BadCode => "bad-code",
            Reason::Replay => "replay",
            Reason::BadAddressHeader => "bad-address-header",
            Reason::OverBudget => "over-budget",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
