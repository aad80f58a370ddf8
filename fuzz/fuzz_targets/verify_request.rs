//! Fuzzes request verification end to end, without the network: the raw
//! query string, the address header and the peer go through the same
//! parsing, address and code checks as the knock endpoint. Nothing may
//! panic, and random input must never verify.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

use knock_otp::auth::{Client, Scheme, Verifier, Window};
use knock_otp::client_addr::{AddrPolicy, ClientIpHeader};
use knock_otp::keys::Secret;
use knock_otp::replay::ReplayCache;
use libfuzzer_sys::fuzz_target;

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    let clients =
        [("md5", Scheme::LegacyMd5), ("hmac", Scheme::HmacSha256)].map(|(name, scheme)| Client {
            name: name.into(),
            scheme,
            key: Secret::new(b"fuzz".to_vec()),
        });
    Verifier::new(
        clients.to_vec(),
        Window {
            max_age_secs: 3,
            max_future_secs: 5,
        },
        true,
    )
});

static POLICY: LazyLock<AddrPolicy> = LazyLock::new(|| AddrPolicy {
    trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
    header: ClientIpHeader::XForwardedFor,
});

fuzz_target!(|data: &[u8]| {
    // First byte picks the peer, the next up to the first NUL is the
    // header, the rest is the query string.
    let Some((&peer_pick, rest)) = data.split_first() else {
        return;
    };
    let peer = if peer_pick & 1 == 0 {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::from([203, 0, 113, 9])
    };
    let (header, query) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..0], rest),
    };
    let Ok(addr) = POLICY.client_addr(peer, std::iter::once(header)) else {
        return;
    };
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let Ok(parsed) = knock_otp::query::parse(query) else {
        return;
    };
    let now = parsed.time;
    let replay = ReplayCache::default();
    assert!(
        VERIFIER
            .verify(&parsed, &addr.to_string(), now, &replay)
            .is_err(),
        "random input verified"
    );
});
