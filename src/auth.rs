//! Authentication: the two code schemes, the time window and the replay
//! cache. A request is accepted when exactly one configured client's key
//! produces its code; every comparison is constant-time.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::cli::CodeArgs;
use crate::error::{ConfigProblem, StartupError};
use crate::keys::{Secret, read_key_file};
use crate::query::{KnockQuery, valid_nonce};
use crate::replay::ReplayCache;
use crate::teapot::Reason;

/// How a client turns its key into a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// generate.php's `md5(CLIENT_IP . KEY . TIME)`, lowercase hex.
    LegacyMd5,
    /// `hex(HMAC-SHA256(key, CLIENT_IP|TIME[|NONCE]))`.
    HmacSha256,
}

impl FromStr for Scheme {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "legacy-md5" => Ok(Scheme::LegacyMd5),
            "hmac-sha256" => Ok(Scheme::HmacSha256),
            other => Err(format!(
                "unknown scheme {other:?}; use legacy-md5 or hmac-sha256"
            )),
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::LegacyMd5 => "legacy-md5",
            Scheme::HmacSha256 => "hmac-sha256",
        })
    }
}

/// A client as the verifier knows it.
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    pub scheme: Scheme,
    pub key: Secret,
}

/// The code a client with `key` must send. `time` is the decimal text as
/// sent; the nonce only counts for hmac-sha256 (the legacy code has none).
pub fn expected_code(
    scheme: Scheme,
    key: &[u8],
    ip: &str,
    time: &str,
    nonce: Option<&str>,
) -> String {
    match scheme {
        Scheme::LegacyMd5 => {
            let mut md5 = Md5::new();
            md5.update(ip.as_bytes());
            md5.update(key);
            md5.update(time.as_bytes());
            hex::encode(md5.finalize())
        }
        Scheme::HmacSha256 => {
            // Any key length is valid for HMAC, so this cannot fail.
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            mac.update(ip.as_bytes());
            mac.update(b"|");
            mac.update(time.as_bytes());
            if let Some(nonce) = nonce {
                mac.update(b"|");
                mac.update(nonce.as_bytes());
            }
            hex::encode(mac.finalize().into_bytes())
        }
    }
}

/// The accepted time window around "now".
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub max_age_secs: u64,
    pub max_future_secs: u64,
}

/// A verified request: who it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub client: usize,
    pub name: String,
    pub(crate) code: String,
}

/// Checks codes against every configured client. A new verifier replaces
/// the old one on a configuration reload; the replay cache is handed in
/// so that it outlives both.
#[derive(Debug)]
pub struct Verifier {
    clients: Vec<Client>,
    window: Window,
    replay_protection: bool,
}

impl Verifier {
    pub fn new(clients: Vec<Client>, window: Window, replay_protection: bool) -> Self {
        Verifier {
            clients,
            window,
            replay_protection,
        }
    }

    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// Verifies `query` as sent from `ip` at unix time `now`.
    pub fn verify(
        &self,
        query: &KnockQuery,
        ip: &str,
        now: u64,
        replay: &ReplayCache,
    ) -> Result<Accepted, (Reason, Option<String>)> {
        // The legacy script refused `time < now - 3`, so `now - 3` itself passes.
        if query.time.saturating_add(self.window.max_age_secs) < now {
            return Err((Reason::TimeTooOld, None));
        }
        if query.time > now.saturating_add(self.window.max_future_secs) {
            return Err((Reason::TimeInFuture, None));
        }
        let client = self
            .matching_client(query, ip)
            .ok_or((Reason::BadCode, None))?;
        let name = self.clients[client].name.clone();
        if self.replay_protection {
            let expires = query.time.saturating_add(self.window.max_age_secs);
            if !replay.claim(&name, &query.code, expires, now) {
                return Err((Reason::Replay, Some(name)));
            }
        }
        Ok(Accepted {
            client,
            name,
            code: query.code.clone(),
        })
    }

    /// Every client is tried, so the time taken does not depend on which
    /// client (if any) matched.
    fn matching_client(&self, query: &KnockQuery, ip: &str) -> Option<usize> {
        let mut found = None;
        for (i, c) in self.clients.iter().enumerate() {
            let expected = expected_code(
                c.scheme,
                c.key.expose(),
                ip,
                &query.time_text,
                query.nonce.as_deref(),
            );
            let equal: bool = expected.as_bytes().ct_eq(query.code.as_bytes()).into();
            if equal && found.is_none() {
                found = Some(i);
            }
        }
        found
    }
}

/// `knock-otp code`: the code for a key file, an address and a time.
pub fn code_for_cli(args: &CodeArgs) -> Result<String, StartupError> {
    let key = read_key_file(&args.key_file).map_err(|e| {
        StartupError::config(
            &args.key_file,
            ConfigProblem::new("--key-file", e.to_string(), e.fix(&args.key_file)),
        )
    })?;
    if let Some(nonce) = &args.nonce {
        if !valid_nonce(nonce) {
            return Err(StartupError::Other(
                "--nonce must be 1-64 characters of A-Z, a-z, 0-9, _ and -".into(),
            ));
        }
        if args.scheme == Scheme::LegacyMd5 {
            return Err(StartupError::Other(
                "--nonce only applies to --scheme hmac-sha256".into(),
            ));
        }
    }
    let time = args.time.unwrap_or_else(crate::service::unix_now);
    let ip = args.ip.to_canonical().to_string();
    Ok(expected_code(
        args.scheme,
        key.expose(),
        &ip,
        &time.to_string(),
        args.nonce.as_deref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_codes_match_known_md5_digests() {
        // md5("127.0.0.1" . "secret" . "1700000000") and md5("") style vectors,
        // re-checked against PHP's md5() by the e2e suite.
        assert_eq!(
            expected_code(Scheme::LegacyMd5, b"", "", "", None),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(
            expected_code(Scheme::LegacyMd5, b"b", "a", "c", None),
            "900150983cd24fb0d6963f7d28e17f72"
        );
    }

    #[test]
    fn hmac_codes_match_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        // Split as ip="what do ya want for nothing?" with an empty time would add
        // a "|", so check the primitive through a message without separators.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_nonce_changes_an_hmac_code_but_not_a_legacy_one() {
        let a = expected_code(Scheme::HmacSha256, b"k", "10.0.0.1", "5", None);
        let b = expected_code(Scheme::HmacSha256, b"k", "10.0.0.1", "5", Some("n"));
        assert_ne!(a, b);
        let c = expected_code(Scheme::LegacyMd5, b"k", "10.0.0.1", "5", Some("n"));
        assert_eq!(
            c,
            expected_code(Scheme::LegacyMd5, b"k", "10.0.0.1", "5", None)
        );
    }

    /// A verifier with its own replay cache, as the service holds them.
    struct V(Verifier, ReplayCache);

    impl V {
        fn verify(
            &self,
            q: &KnockQuery,
            ip: &str,
            now: u64,
        ) -> Result<Accepted, (Reason, Option<String>)> {
            self.0.verify(q, ip, now, &self.1)
        }

        fn release(&self, a: &Accepted) {
            self.1.release(&a.name, &a.code);
        }
    }

    fn verifier() -> V {
        let clients = vec![
            Client {
                name: "laptop".into(),
                scheme: Scheme::LegacyMd5,
                key: Secret::new(b"one".to_vec()),
            },
            Client {
                name: "ci".into(),
                scheme: Scheme::HmacSha256,
                key: Secret::new(b"two".to_vec()),
            },
        ];
        let window = Window {
            max_age_secs: 3,
            max_future_secs: 5,
        };
        V(Verifier::new(clients, window, true), ReplayCache::default())
    }

    fn query(key: &[u8], scheme: Scheme, time: u64, nonce: Option<&str>) -> KnockQuery {
        let code = expected_code(scheme, key, "10.0.0.1", &time.to_string(), nonce);
        KnockQuery {
            time_text: time.to_string(),
            time,
            code,
            nonce: nonce.map(String::from),
        }
    }

    #[test]
    fn each_client_is_recognised_by_its_own_key() {
        let v = verifier();
        assert_eq!(
            v.verify(
                &query(b"one", Scheme::LegacyMd5, 100, None),
                "10.0.0.1",
                100
            )
            .unwrap()
            .name,
            "laptop"
        );
        assert_eq!(
            v.verify(
                &query(b"two", Scheme::HmacSha256, 100, None),
                "10.0.0.1",
                100
            )
            .unwrap()
            .name,
            "ci"
        );
    }

    #[test]
    fn a_code_for_another_address_is_refused() {
        let v = verifier();
        let q = query(b"one", Scheme::LegacyMd5, 100, None);
        assert_eq!(v.verify(&q, "10.0.0.2", 100), Err((Reason::BadCode, None)));
    }

    #[test]
    fn the_window_edges_match_the_legacy_script() {
        let v = verifier();
        assert!(
            v.verify(&query(b"one", Scheme::LegacyMd5, 97, None), "10.0.0.1", 100)
                .is_ok()
        );
        assert_eq!(
            v.verify(&query(b"one", Scheme::LegacyMd5, 96, None), "10.0.0.1", 100),
            Err((Reason::TimeTooOld, None))
        );
        assert!(
            v.verify(
                &query(b"one", Scheme::LegacyMd5, 105, None),
                "10.0.0.1",
                100
            )
            .is_ok()
        );
        assert_eq!(
            v.verify(
                &query(b"one", Scheme::LegacyMd5, 106, None),
                "10.0.0.1",
                100
            ),
            Err((Reason::TimeInFuture, None))
        );
    }

    #[test]
    fn a_replayed_code_is_refused_and_a_released_one_is_not() {
        let v = verifier();
        let q = query(b"one", Scheme::LegacyMd5, 100, None);
        let accepted = v.verify(&q, "10.0.0.1", 100).unwrap();
        assert_eq!(
            v.verify(&q, "10.0.0.1", 101),
            Err((Reason::Replay, Some("laptop".into())))
        );
        v.release(&accepted);
        assert!(v.verify(&q, "10.0.0.1", 101).is_ok());
    }

    #[test]
    fn nonces_let_one_client_ask_twice_in_one_second() {
        let v = verifier();
        assert!(
            v.verify(
                &query(b"two", Scheme::HmacSha256, 100, Some("a")),
                "10.0.0.1",
                100
            )
            .is_ok()
        );
        assert!(
            v.verify(
                &query(b"two", Scheme::HmacSha256, 100, Some("b")),
                "10.0.0.1",
                100
            )
            .is_ok()
        );
    }

    #[test]
    fn an_uppercase_code_is_refused() {
        let v = verifier();
        let mut q = query(b"one", Scheme::LegacyMd5, 100, None);
        q.code = q.code.to_uppercase();
        assert_eq!(v.verify(&q, "10.0.0.1", 100), Err((Reason::BadCode, None)));
    }
}
