//! The knock endpoint in-process: every teapot reason, the success
//! format, 404, the address rules and the queue, with `reload = "none"`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use actix_web::http::{Method, StatusCode};
use actix_web::{App, test};
use knock_otp::config::{RawClient, RawConfig, RawDoor};
use knock_otp::service::{Service, unix_now};
use knock_otp::settings::Settings;
use knock_otp::{auth, teapot};

const LEGACY_KEY: &str = "legacy-secret";
const HMAC_KEY: &str = "hmac-secret";
const PEER: &str = "203.0.113.7:40000";

struct Fixture {
    _dir: tempfile::TempDir,
    service: Arc<Service>,
}

fn write_key(dir: &Path, name: &str, key: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{key}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

fn fixture(edit: impl FnOnce(&mut RawConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = RawConfig::default();
    raw.clients.push(RawClient {
        name: "laptop".into(),
        key_file: write_key(dir.path(), "laptop", LEGACY_KEY),
        scheme: "legacy-md5".into(),
    });
    raw.clients.push(RawClient {
        name: "ci".into(),
        key_file: write_key(dir.path(), "ci", HMAC_KEY),
        scheme: "hmac-sha256".into(),
    });
    raw.knockd.reload = "none".into();
    // Budgets have their own tests; here they would get in the way.
    raw.limits.rejects_per_minute = 0;
    raw.limits.issues_per_minute = 0;
    raw.knockd.doors.push(RawDoor {
        sequence_file: dir.path().join("door-0.seq").display().to_string(),
        ..RawDoor::default()
    });
    edit(&mut raw);
    let settings = Settings::from_raw(&raw).unwrap_or_else(|p| panic!("{p:?}"));
    let service = Service::new(settings).unwrap();
    Fixture { _dir: dir, service }
}

fn legacy_query(ip: &str, time: u64) -> String {
    let code = auth::expected_code(
        auth::Scheme::LegacyMd5,
        LEGACY_KEY.as_bytes(),
        ip,
        &time.to_string(),
        None,
    );
    format!("time={time}&code={code}")
}

fn hmac_query(ip: &str, time: u64, nonce: &str) -> String {
    let code = auth::expected_code(
        auth::Scheme::HmacSha256,
        HMAC_KEY.as_bytes(),
        ip,
        &time.to_string(),
        Some(nonce),
    );
    format!("time={time}&code={code}&nonce={nonce}")
}

/// Sends one request from `peer` and returns status, headers and body.
async fn send(
    f: &Fixture,
    method: Method,
    uri: &str,
    peer: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, actix_web::http::header::HeaderMap, String) {
    let app =
        test::init_service(App::new().configure(knock_otp::http::configure(f.service.clone())))
            .await;
    let mut req = test::TestRequest::default()
        .method(method)
        .uri(uri)
        .peer_addr(peer.parse::<SocketAddr>().unwrap());
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let resp = test::call_service(&app, req.to_request()).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = test::read_body(resp).await;
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

/// The status of a GET of the knock path with `query` from `peer`.
async fn knock_status(
    f: &Fixture,
    query: &str,
    peer: &str,
    headers: &[(&str, &str)],
) -> StatusCode {
    let uri = format!("/generate.php?{query}");
    send(f, Method::GET, &uri, peer, headers).await.0
}

async fn get(f: &Fixture, uri: &str) -> (StatusCode, String) {
    let (s, _, b) = send(f, Method::GET, uri, PEER, &[]).await;
    (s, b)
}

/// Writes `#` over the first byte of the door file in place, as knockd
/// does when the sequence is used; the service then frees the door.
fn mark_used(f: &Fixture) {
    use std::io::Write;
    let path = &f.service.settings.doors[0].sequence_file;
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all(b"#").unwrap();
}

fn knocks(body: &str) -> Vec<(u16, String)> {
    assert!(
        body.starts_with(' ') && !body.ends_with(' ') && !body.contains("  "),
        "{body:?}"
    );
    body[1..]
        .split(' ')
        .map(|k| {
            let (port, proto) = k.split_once(':').unwrap();
            (port.parse().unwrap(), proto.to_owned())
        })
        .collect()
}

#[actix_web::test]
async fn a_valid_legacy_code_gets_five_knocks_in_the_legacy_format() {
    let f = fixture(|_| {});
    let (status, headers, body) = send(
        &f,
        Method::GET,
        &format!("/generate.php?{}", legacy_query("203.0.113.7", unix_now())),
        PEER,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get("cache-control").unwrap(), "no-store");
    let k = knocks(&body);
    assert_eq!(k.len(), 5);
    assert!(
        k.iter()
            .all(|(p, proto)| (15000..=25000).contains(p) && (proto == "tcp" || proto == "udp"))
    );
    assert_eq!(
        k.iter().map(|(p, _)| p).collect::<HashSet<_>>().len(),
        5,
        "ports are distinct"
    );
    // The door file holds the same knocks, comma-separated, then a decoy.
    let door = std::fs::read_to_string(&f.service.settings.doors[0].sequence_file).unwrap();
    let lines: Vec<&str> = door.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        body.replacen(' ', "", 1)
            .replace(' ', ",")
            .replacen("", " ", 1)
    );
    assert_ne!(lines[1], lines[0]);
}

#[actix_web::test]
async fn every_reason_for_refusal_gets_the_same_teapot_bytes() {
    let f = fixture(|_| {});
    let now = unix_now();
    let ip = "203.0.113.7";
    let good = legacy_query(ip, now);
    let code = good.split("code=").nth(1).unwrap().to_owned();
    let long = format!("{good}&pad={}", "x".repeat(1100));
    let cases: Vec<(&str, String)> = vec![
        ("no parameters", String::new()),
        ("missing time", format!("code={code}")),
        ("empty time", format!("time=&code={code}")),
        ("missing code", format!("time={now}")),
        ("empty code", format!("time={now}&code=")),
        ("non-decimal time", format!("time=12ab&code={code}")),
        ("zero time", format!("time=0&code={code}")),
        ("negative time", format!("time=-{now}&code={code}")),
        ("too old", legacy_query(ip, now - 60)),
        ("in the future", legacy_query(ip, now + 60)),
        ("wrong code", format!("time={now}&code={}", "0".repeat(32))),
        (
            "code for another address",
            legacy_query("198.51.100.1", now),
        ),
        ("duplicated time", format!("{good}&time={now}")),
        ("duplicated code", format!("{good}&code={code}")),
        ("query over 1 KiB", long),
        ("bad nonce", format!("{good}&nonce=a%20b")),
    ];
    for (what, query) in &cases {
        let (status, body) = get(&f, &format!("/generate.php?{query}")).await;
        assert_eq!(status, StatusCode::IM_A_TEAPOT, "{what}");
        assert_eq!(body, teapot::BODY, "{what}");
    }
    for method in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ] {
        let (status, _, _) = send(
            &f,
            method.clone(),
            &format!("/generate.php?{}", legacy_query(ip, now)),
            PEER,
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::IM_A_TEAPOT, "{method}");
    }
    // None of the above used the code up; the first real use does.
    let (status, _) = get(&f, &format!("/generate.php?{good}")).await;
    assert_eq!(status, StatusCode::OK);
    mark_used(&f);
    let (status, body) = get(&f, &format!("/generate.php?{good}")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::IM_A_TEAPOT, teapot::BODY),
        "replayed code"
    );
}

#[actix_web::test]
async fn any_other_path_is_not_found() {
    let f = fixture(|_| {});
    for path in [
        "/",
        "/generate.php/x",
        "/sequence.txt",
        "/GENERATE.PHP",
        "/knock-otp",
    ] {
        assert_eq!(get(&f, path).await.0, StatusCode::NOT_FOUND, "{path}");
    }
}

#[actix_web::test]
async fn a_spoofed_real_ip_from_an_untrusted_peer_does_not_change_the_address() {
    let f = fixture(|_| {});
    let now = unix_now();
    let spoofed = [("x-real-ip", "198.51.100.1")];
    let status = knock_status(&f, &legacy_query("198.51.100.1", now), PEER, &spoofed).await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    let status = knock_status(&f, &legacy_query("203.0.113.7", now), PEER, &spoofed).await;
    assert_eq!(status, StatusCode::OK);
    mark_used(&f);
}

#[actix_web::test]
async fn a_trusted_proxy_names_the_client_address() {
    let f = fixture(|_| {});
    let proxy = "127.0.0.1:50000";
    let now = unix_now();
    let status = knock_status(
        &f,
        &legacy_query("198.51.100.1", now),
        proxy,
        &[("x-real-ip", "198.51.100.1")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    mark_used(&f);
    let (status, _, body) = send(
        &f,
        Method::GET,
        "/knock-otp/ip",
        proxy,
        &[("x-real-ip", "2001:db8::1")],
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "2001:db8::1\n"));
    let status = knock_status(
        &f,
        &legacy_query("198.51.100.1", now + 1),
        proxy,
        &[("x-real-ip", "not-an-ip")],
    )
    .await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
}

#[actix_web::test]
async fn forwarded_for_uses_the_rightmost_untrusted_hop() {
    let f = fixture(|raw| raw.http.client_ip_header = "x-forwarded-for".into());
    let now = unix_now();
    let xff = [("x-forwarded-for", "6.6.6.6, 198.51.100.1")];
    let status = knock_status(&f, &legacy_query("6.6.6.6", now), "127.0.0.1:1", &xff).await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    let status = knock_status(&f, &legacy_query("198.51.100.1", now), "127.0.0.1:1", &xff).await;
    assert_eq!(status, StatusCode::OK);
}

#[actix_web::test]
async fn the_address_echo_answers_the_peer_and_can_be_turned_off() {
    let f = fixture(|_| {});
    assert_eq!(
        get(&f, "/knock-otp/ip").await,
        (StatusCode::OK, "203.0.113.7\n".into())
    );
    let f = fixture(|raw| raw.http.ip_echo_path = String::new());
    assert_eq!(get(&f, "/knock-otp/ip").await.0, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn hmac_nonces_let_one_client_ask_twice_in_one_second() {
    let f = fixture(|_| {});
    let now = unix_now();
    for nonce in ["a", "b"] {
        let (status, _) = get(
            &f,
            &format!("/generate.php?{}", hmac_query("203.0.113.7", now, nonce)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "nonce {nonce}");
        mark_used(&f);
    }
    let (status, _) = get(
        &f,
        &format!("/generate.php?{}", hmac_query("203.0.113.7", now, "a")),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::IM_A_TEAPOT,
        "a repeated nonce is a replay"
    );
}

#[actix_web::test]
async fn sequences_respect_length_range_exclusions_and_protocols() {
    let f = fixture(|raw| {
        raw.sequence.length = 8;
        raw.sequence.port_min = 30000;
        raw.sequence.port_max = 30009;
        raw.sequence.exclude_ports = vec![30000, 30001];
        raw.sequence.protocols = vec!["udp".into()];
        raw.auth.replay_protection = false;
    });
    let now = unix_now();
    for _ in 0..20 {
        let (status, body) = get(
            &f,
            &format!("/generate.php?{}", legacy_query("203.0.113.7", now)),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let k = knocks(&body);
        assert_eq!(k.len(), 8);
        let ports: HashSet<u16> = k.iter().map(|(p, _)| *p).collect();
        assert_eq!(ports, (30002..=30009).collect());
        assert!(k.iter().all(|(_, proto)| proto == "udp"));
        mark_used(&f);
    }
}

#[actix_web::test]
async fn with_the_only_door_busy_a_request_waits_then_gets_503_with_retry_after() {
    let f = fixture(|raw| {
        raw.sequence.ttl_secs = 600;
        raw.knockd.queue_timeout_ms = 50;
    });
    let now = unix_now();
    assert_eq!(
        knock_status(&f, &legacy_query("203.0.113.7", now), PEER, &[]).await,
        StatusCode::OK
    );
    let query = hmac_query("203.0.113.7", now, "x");
    let (status, headers, _) = send(
        &f,
        Method::GET,
        &format!("/generate.php?{query}"),
        PEER,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers.get("retry-after").unwrap(), "2");
    // The 503 did not use the code up.
    assert!(f.service.pool.busy() == 1);
}

#[actix_web::test]
async fn an_address_over_its_rejection_budget_gets_the_teapot_even_with_a_valid_code() {
    let f = fixture(|raw| {
        raw.limits.rejects_per_minute = 1;
        raw.limits.reject_burst = 3;
    });
    for _ in 0..4 {
        assert_eq!(
            get(&f, "/generate.php?time=1&code=x").await.0,
            StatusCode::IM_A_TEAPOT
        );
    }
    let (status, body) = get(
        &f,
        &format!("/generate.php?{}", legacy_query("203.0.113.7", unix_now())),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::IM_A_TEAPOT, teapot::BODY)
    );
    assert_eq!(f.service.metrics.rejections(teapot::Reason::OverBudget), 1);
    // Another address is not affected.
    let other = "198.51.100.3:1000";
    let status = knock_status(&f, &legacy_query("198.51.100.3", unix_now()), other, &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[actix_web::test]
async fn a_client_over_its_issue_budget_gets_the_teapot() {
    let f = fixture(|raw| {
        raw.limits.issues_per_minute = 1;
        raw.limits.issue_burst = 1;
        raw.knockd.doors.push(RawDoor {
            sequence_file: raw.knockd.doors[0]
                .sequence_file
                .replace("door-0", "door-1"),
            ..RawDoor::default()
        });
    });
    let now = unix_now();
    assert_eq!(
        get(
            &f,
            &format!("/generate.php?{}", hmac_query("203.0.113.7", now, "a"))
        )
        .await
        .0,
        StatusCode::OK
    );
    let (status, body) = get(
        &f,
        &format!("/generate.php?{}", hmac_query("203.0.113.7", now, "b")),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::IM_A_TEAPOT, teapot::BODY)
    );
    assert_eq!(f.service.pool.busy(), 1, "the refused request took no door");
    // The laptop's own budget is untouched.
    assert_eq!(
        knock_status(&f, &legacy_query("203.0.113.7", now), PEER, &[]).await,
        StatusCode::OK
    );
}

#[actix_web::test]
async fn metrics_and_health_report_what_happened() {
    let f = fixture(|_| {});
    let admin =
        test::init_service(App::new().configure(knock_otp::admin::configure(f.service.clone())))
            .await;
    get(&f, "/generate.php?time=1&code=x").await;
    get(
        &f,
        &format!("/generate.php?{}", legacy_query("203.0.113.7", unix_now())),
    )
    .await;
    let resp = test::call_service(
        &admin,
        test::TestRequest::get().uri("/metrics").to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
    assert!(text.contains("knock_otp_issues_total 1\n"), "{text}");
    assert!(
        text.contains("knock_otp_rejections_total{reason=\"time-too-old\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("knock_otp_doors_busy 1\n"), "{text}");
    let resp = test::call_service(
        &admin,
        test::TestRequest::get().uri("/healthz").to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
}
