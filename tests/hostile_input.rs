//! Property tests over what an attacker controls: the query string, the
//! address headers and the time. Whatever arrives, the knock endpoint
//! answers the teapot (or 404 off its path): never a 5xx, never a panic,
//! never a sequence.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::App;
use actix_web::http::StatusCode;
use actix_web::test as atest;
use knock_otp::config::{RawClient, RawConfig, RawDoor};
use knock_otp::service::{Service, unix_now};
use knock_otp::settings::Settings;
use knock_otp::teapot;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn service(dir: &std::path::Path) -> Arc<Service> {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("key");
    std::fs::write(&key, "k").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut raw = RawConfig::default();
    for (name, scheme) in [("md5", "legacy-md5"), ("hmac", "hmac-sha256")] {
        let key_file = key.display().to_string();
        raw.clients.push(RawClient {
            name: name.into(),
            key_file,
            scheme: scheme.into(),
        });
    }
    raw.knockd.reload = "none".into();
    let sequence_file = dir.join("door-0.seq").display().to_string();
    raw.knockd.doors.push(RawDoor {
        sequence_file,
        ..RawDoor::default()
    });
    raw.http.trusted_proxies.push("10.0.0.0/8".into());
    Service::new(Settings::from_raw(&raw).unwrap()).unwrap()
}

/// Query strings built from the parts that matter, mixed with noise.
fn queries() -> impl Strategy<Value = String> {
    let time = prop_oneof![
        Just(String::new()),
        any::<u64>().prop_map(|t| t.to_string()),
        (0u64..20).prop_map(|d| (unix_now() - 10 + d).to_string()),
        "[-+ 0-9a-fx.e%]{0,25}",
    ];
    let code = prop_oneof![
        "[0-9a-f]{32}",
        "[0-9a-f]{64}",
        "[ -~]{0,80}",
        Just(String::new())
    ];
    let nonce = prop_oneof![Just(None), "[ -~]{0,70}".prop_map(Some)];
    let structured = (time, code, nonce, "[a-z&=%]{0,10}").prop_map(|(t, c, n, junk)| {
        let mut q = format!("time={t}&code={c}&{junk}");
        if let Some(n) = n {
            q.push_str(&format!("&nonce={n}"));
        }
        q
    });
    prop_oneof![
        structured,
        "[ -~]{0,2000}",
        proptest::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| b.iter().map(|x| format!("%{x:02X}")).collect::<String>())
    ]
}

fn peers() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        Just("203.0.113.9:1234".parse().unwrap()),
        Just("127.0.0.1:1".parse().unwrap()),
        Just("[::ffff:10.1.2.3]:9".parse().unwrap()),
        Just("[2001:db8::7]:443".parse().unwrap()),
    ]
}

fn header_values() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        "[0-9a-f:., ]{0,60}".prop_map(|s| Some(s.into_bytes())),
        proptest::collection::vec(0x20u8..0x7f, 0..100).prop_map(Some),
        proptest::collection::vec(0x80u8..=0xff, 1..20).prop_map(Some),
    ]
}

#[test]
fn no_request_gets_a_5xx_a_panic_or_a_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let system = actix_web::rt::System::new();
    let svc = system.block_on(async { service(dir.path()) });
    let mut runner = TestRunner::new(Config {
        cases: 600,
        ..Config::default()
    });
    let strategy = (
        queries(),
        peers(),
        header_values(),
        header_values(),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(query, peer, real_ip, xff, on_path)| {
            // What is not a valid request target never reaches a handler.
            let path = if on_path { "/generate.php" } else { "/x" };
            prop_assume!(actix_web::http::Uri::try_from(format!("{path}?{query}")).is_ok());
            let svc = svc.clone();
            let shown = query.clone();
            let (status, body) = system.block_on(async move {
                let app =
                    atest::init_service(App::new().configure(knock_otp::http::configure(svc)))
                        .await;
                let mut req = atest::TestRequest::get()
                    .uri(&format!("{path}?{query}"))
                    .peer_addr(peer);
                for (name, value) in [("x-real-ip", real_ip), ("x-forwarded-for", xff)] {
                    if let Some(v) = value
                        .and_then(|v| actix_web::http::header::HeaderValue::from_bytes(&v).ok())
                    {
                        req = req.insert_header((name, v));
                    }
                }
                let resp = atest::call_service(&app, req.to_request()).await;
                let status = resp.status();
                (status, atest::read_body(resp).await)
            });
            prop_assert!(!status.is_server_error(), "{status} for {shown:?}");
            if on_path {
                prop_assert_eq!(status, StatusCode::IM_A_TEAPOT);
                prop_assert_eq!(&body[..], teapot::BODY.as_bytes());
            } else {
                prop_assert_eq!(status, StatusCode::NOT_FOUND);
            }
            Ok(())
        })
        .unwrap();
}

proptest! {
    #![proptest_config(Config { cases: 2000, ..Config::default() })]

    #[test]
    fn the_query_parser_never_panics_and_keeps_its_limits(raw in "[ -~]{0,1500}") {
        if let Ok(q) = knock_otp::query::parse(&raw) {
            prop_assert!(raw.len() <= knock_otp::query::MAX_QUERY_BYTES);
            prop_assert!(q.time > 0 && !q.code.is_empty());
            prop_assert!(q.nonce.as_deref().is_none_or(knock_otp::query::valid_nonce));
        }
    }
}
