//! Issue 3, proved with real components: many clients, each in its own
//! network namespace, run the real ssh with the legacy ProxyCommand (or
//! the client helper) against sshd behind iptables, opened by stock
//! knockd (one process per door) driven by knock-otp. Runs only with
//! KNOCK_OTP_E2E=1, as root. Each test has its own namespaces, subnet
//! and port range, so cargo may run them in parallel.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::site::{HTTP_PORT, SSH_LIMIT, Site, SiteSpec};
use common::ssh_runs::{SshRun, assert_all_got_in, run_all_at_once, run_one};
use common::{code, unix_now, wait_for_file};

const WAIT: Duration = Duration::from_secs(30);

/// The legacy line started by ssh in every client at once.
fn legacy_ssh_at_once(site: &Site, clients: usize) -> Vec<SshRun> {
    let cmds = (0..clients)
        .map(|i| {
            let proxy = site.legacy_proxy(i);
            (format!("c{i}"), site.ssh(i, &proxy, SSH_LIMIT))
        })
        .collect();
    run_all_at_once(cmds)
}

/// How many times knockd said OPEN SESAME, over every door.
fn openings(site: &Site) -> usize {
    site.knockds
        .iter()
        .map(|k| k.proc.out.count("OPEN SESAME"))
        .sum()
}

/// A sequence fetched by client `i` with curl and a code made by
/// `knock-otp code`, without knocking.
fn fetch_sequence(site: &Site, i: usize) -> String {
    let time = unix_now();
    let code = code(
        &site.keys[i],
        &site.lan.client_ip(i),
        time,
        "legacy-md5",
        None,
    );
    let url = format!(
        "http://{}:{}/generate.php?time={time}&code={code}",
        site.server_ip(),
        HTTP_PORT
    );
    let out = site
        .client(i, "curl")
        .args(["-sS", "-w", "\n%{http_code}", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", ""));
    assert_eq!(status, "200", "{text}");
    body.to_owned()
}

/// The legacy line without its final nc: code, curl, knock.
fn legacy_knock(site: &Site, i: usize) {
    let script = format!(
        r#"T=$(date +%s); C=$(printf "%s" "{ip}$(cat {key})$T" | md5sum | cut -d" " -f1)
knock {server} -d 100 $(curl -sS "http://{server}:{port}/generate.php?time=$T&code=$C")"#,
        ip = site.lan.client_ip(i),
        key = site.keys[i].display(),
        server = site.server_ip(),
        port = HTTP_PORT,
    );
    let out = site
        .client(i, "bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn four_doors_let_eight_clients_started_at_once_all_in() {
    if !common::e2e() {
        return;
    }
    let site = Site::start(&SiteSpec::legacy("t1", 1, 8, 4));
    let runs = legacy_ssh_at_once(&site, 8);
    assert_all_got_in(&runs);

    site.otp.proc.out.wait_for_nth("event=used", 8, WAIT);
    let issues = site.events("issue");
    assert_eq!(issues.len(), 8);
    let doors: BTreeSet<&str> = issues.iter().map(|e| e["door"].as_str()).collect();
    assert!(
        doors.len() > 1 && doors.iter().all(|d| ["0", "1", "2", "3"].contains(d)),
        "clients at once are spread over the doors: {doors:?}"
    );
    assert_eq!(openings(&site), 8);
}

#[test]
fn one_door_lets_four_simultaneous_clients_in_one_after_the_other() {
    if !common::e2e() {
        return;
    }
    let site = Site::start(&SiteSpec::legacy("t2", 2, 4, 1));
    let runs = legacy_ssh_at_once(&site, 4);
    assert_all_got_in(&runs);

    site.otp.proc.out.wait_for_nth("event=used", 4, WAIT);
    let events = site.door_events();
    let summary: Vec<String> = events
        .iter()
        .map(|e| format!("{} {} door={}", e["event"], e["client"], e["door"]))
        .collect();
    assert_eq!(events.len(), 8, "{summary:#?}");
    // The queue hands the door on only after the previous sequence is used.
    for pair in events.chunks(2) {
        assert_eq!(pair[0]["event"], "issue", "{summary:#?}");
        assert_eq!(pair[1]["event"], "used", "{summary:#?}");
        assert_eq!(pair[0]["client"], pair[1]["client"], "{summary:#?}");
        assert_eq!(pair[0]["door"], "0", "{summary:#?}");
    }
    let clients: BTreeSet<&str> = events.iter().map(|e| e["client"].as_str()).collect();
    assert_eq!(clients, BTreeSet::from(["c0", "c1", "c2", "c3"]));
}

#[test]
fn fifty_sequential_connects_alternating_clients_all_succeed() {
    if !common::e2e() {
        return;
    }
    let mut site = Site::start(&SiteSpec::legacy("t3", 3, 4, 2));
    for n in 0..50 {
        let i = n % 4;
        let run = run_one(
            &format!("connect {n} by c{i}"),
            site.ssh(i, &site.legacy_proxy(i), SSH_LIMIT),
        );
        assert!(run.got_in(), "{run}");
    }

    site.otp.proc.out.wait_for_nth("event=used", 50, WAIT);
    assert_eq!(site.events("issue").len(), 50);
    assert_eq!(openings(&site), 50, "every connect knocked its own way in");
    assert!(site.events("reject").is_empty());
    assert!(site.events("unavailable").is_empty());
    for (i, knockd) in site.knockds.iter_mut().enumerate() {
        assert!(knockd.proc.alive(), "knockd of door {i} died");
    }
    assert!(site.otp.proc.alive(), "knock-otp died");
}

#[test]
fn a_client_that_does_not_knock_cannot_reach_ssh() {
    if !common::e2e() {
        return;
    }
    let site = Site::start(&SiteSpec::legacy("t4", 4, 2, 1));
    assert!(!site.port_22_open_for(0), "port 22 is open without a knock");

    // Control: the same client knocks with the legacy line and is let in,
    // while the other one, which did not knock, is still shut out.
    legacy_knock(&site, 0);
    wait_for_file(&site.opened_file(), WAIT);
    assert_eq!(site.opened(), vec![site.lan.client_ip(0)]);
    assert!(site.port_22_open_for(0), "the knock did not open port 22");
    assert!(
        !site.port_22_open_for(1),
        "another client's knock let this one in"
    );
}

#[test]
fn an_unused_sequence_blocks_nobody_past_its_ttl_and_then_stops_working() {
    if !common::e2e() {
        return;
    }
    let spec = SiteSpec {
        ttl_secs: 3,
        ..SiteSpec::legacy("t5", 5, 2, 1)
    };
    let site = Site::start(&spec);
    let stale = fetch_sequence(&site, 0);

    // B asks while A holds the only door; it is served once A's sequence
    // is withdrawn.
    let run = run_one("c1", site.ssh(1, &site.legacy_proxy(1), SSH_LIMIT));
    assert!(run.got_in(), "{run}");
    site.otp.proc.out.wait_for_nth("event=withdrawn", 1, WAIT);
    site.otp.proc.out.wait_for_nth("event=used", 1, WAIT);
    let order: Vec<String> = site
        .door_events()
        .iter()
        .map(|e| format!("{} {}", e["event"], e["client"]))
        .collect();
    assert_eq!(
        order,
        ["issue c0", "withdrawn c0", "issue c1", "used c1"],
        "the door went to B when A's sequence was withdrawn"
    );

    // A knocks the withdrawn sequence: knockd no longer expects it.
    let knock = site
        .client(0, "knock")
        .args(["-d", "100", &site.server_ip()])
        .args(stale.split_whitespace())
        .status()
        .unwrap();
    assert!(knock.success());
    // nc retries its SYN within its 2 s, so a late rule would still show.
    assert!(
        !site.port_22_open_for(0),
        "a withdrawn sequence opened port 22"
    );
    assert!(!site.opened().contains(&site.lan.client_ip(0)));
}

#[test]
fn the_client_helper_gets_in_with_both_schemes() {
    if !common::e2e() {
        return;
    }
    let spec = SiteSpec {
        schemes: &["legacy-md5", "hmac-sha256"],
        ..SiteSpec::legacy("t6", 6, 0, 2)
    };
    let site = Site::start(&spec);
    let legacy = site.helper_proxy(0, "legacy-md5");
    let hmac = site.helper_proxy(1, "hmac-sha256");
    // Two hmac connects of one client in the same second: the nonce keeps
    // the second from being a replay.
    let runs = run_all_at_once(vec![
        ("c0 legacy".into(), site.ssh(0, &legacy, SSH_LIMIT)),
        ("c1 hmac first".into(), site.ssh(1, &hmac, SSH_LIMIT)),
        ("c1 hmac second".into(), site.ssh(1, &hmac, SSH_LIMIT)),
    ]);
    assert_all_got_in(&runs);

    site.otp.proc.out.wait_for_nth("event=used", 3, WAIT);
    let clients: Vec<String> = site
        .events("issue")
        .iter()
        .map(|e| e["client"].clone())
        .collect();
    assert_eq!(clients.iter().filter(|c| *c == "c0").count(), 1);
    assert_eq!(clients.iter().filter(|c| *c == "c1").count(), 2);
    assert!(site.events("reject").is_empty());
}

/// The legacy line with timestamps: how long knock-otp took to answer
/// and how long the knocks took, printed to ssh's stderr.
fn timed_proxy(site: &Site, i: usize) -> String {
    format!(
        // One line: it becomes an ssh ProxyCommand.
        concat!(
            r#"bash -c 'T=$(date +%%s); "#,
            r#"C=$(printf "%%s" "{ip}$(cat {key})$T" | md5sum | cut -d" " -f1); "#,
            r#"S=$(date +%%s%%N); R=$(curl -sS "http://%h:{port}/generate.php?time=$T&code=$C"); "#,
            r#"A=$(date +%%s%%N); knock %h -d 100 $R; K=$(date +%%s%%N); "#,
            r#"echo "answer_ms=$(( (A-S)/1000000 )) knock_ms=$(( (K-A)/1000000 ))" >&2; "#,
            r#"sleep 0.5; nc %h %p'"#,
        ),
        ip = site.lan.client_ip(i),
        key = site.keys[i].display(),
        port = HTTP_PORT,
    )
}

/// min / median / max in milliseconds.
fn spread(mut ms: Vec<u64>) -> String {
    if ms.is_empty() {
        return "-".into();
    }
    ms.sort_unstable();
    format!("{} / {} / {}", ms[0], ms[ms.len() / 2], ms[ms.len() - 1])
}

#[test]
#[ignore = "benchmark: KNOCK_OTP_E2E=1 cargo test --release --test many_clients \
            -- --ignored --nocapture bench_"]
fn bench_sixteen_clients_with_1_4_16_doors() {
    if !common::e2e() {
        return;
    }
    let limit = Duration::from_secs(120);
    println!("16 clients started at once (legacy line: knock -d 100, 5 knocks, sleep 0.5)");
    println!("doors | got in | answer ms min/med/max | shell ms min/med/max");
    for (n, doors) in [1usize, 4, 16].into_iter().enumerate() {
        let tag = format!("b{doors}");
        let spec = SiteSpec {
            queue_timeout_ms: 30_000,
            ..SiteSpec::legacy(&tag, 21 + n as u8, 16, doors)
        };
        let site = Site::start(&spec);
        let cmds = (0..16)
            .map(|i| (format!("c{i}"), site.ssh(i, &timed_proxy(&site, i), limit)))
            .collect();
        let runs = run_all_at_once(cmds);
        let ok: Vec<_> = runs.iter().filter(|r| r.got_in()).collect();
        for r in runs.iter().filter(|r| !r.got_in()) {
            println!("  failed: {r}");
        }
        println!(
            "{doors:>5} | {:>3}/16 | {:>21} | {:>20}",
            ok.len(),
            spread(runs.iter().filter_map(|r| r.number("answer_ms")).collect()),
            spread(ok.iter().map(|r| r.elapsed.as_millis() as u64).collect()),
        );
    }

    let site = Site::start(&SiteSpec::legacy("b1c", 24, 1, 1));
    println!("one client alone, 1 door: ssh start to shell | answer | knocks (5 x 100 ms)");
    for n in 0..3 {
        let run = run_one("alone", site.ssh(0, &timed_proxy(&site, 0), limit));
        assert!(run.got_in(), "{run}");
        println!(
            "run {n}: {} ms | {} ms | {} ms",
            run.elapsed.as_millis(),
            run.number("answer_ms").unwrap_or_default(),
            run.number("knock_ms").unwrap_or_default()
        );
        // The legacy code is per second; let the next run have its own.
        site.otp.proc.out.wait_for_nth("event=used", n + 1, WAIT);
        let second = unix_now();
        while unix_now() == second {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
