//! fail2ban/filter.d/knock-otp.conf with fail2ban-regex, on sample lines
//! (IPv6, the journal's prefix) and on the lines of a real knock-otp run
//! behind nginx; and the jail as fail2ban-client reads it.

use std::fs;
use std::process::Command;

use crate::common::{KnockOtp, curl, e2e, require, unix_now};
use crate::live::{LOG_WAIT, Stack, write_config};
use crate::{kit, read, run_ok, temp_dir, text, write};

const REJECT_LINES: &[(&str, &str)] = &[
    (
        "2026-12-03T14:00:00.123Z WARN  event=reject addr=203.0.113.7 reason=bad-code",
        "203.0.113.7",
    ),
    (
        "2026-12-03T14:00:01.123Z WARN  event=reject addr=198.51.100.4 reason=replay client=laptop",
        "198.51.100.4",
    ),
    (
        "2026-12-03T14:00:02.123Z WARN  event=reject addr=2001:db8::1 reason=time-too-old",
        "2001:db8::1",
    ),
    (
        "2026-12-03T14:00:03.123Z WARN  event=reject addr=2001:db8:0:1::17 reason=over-budget \
            client=ci",
        "2001:db8:0:1::17",
    ),
    // As the journal backend hands it over: host and unit prefix.
    (
        "web1 knock-otp[812]: 2026-12-03T14:00:04.123Z WARN  event=reject addr=192.0.2.9 \
            reason=bad-nonce",
        "192.0.2.9",
    ),
];

const OTHER_LINES: &[&str] = &[
    "2026-12-03T14:00:05.123Z INFO  event=issue client=laptop addr=1.2.3.4 door=0 knocks=5 \
        reload_ms=1.3",
    "web1 knock-otp[812]: 2026-12-03T14:00:06.123Z INFO  event=issue client=laptop \
        addr=2001:db8::2 door=1 knocks=5 reload_ms=0.9",
    "2026-12-03T14:00:07.123Z INFO  event=start listen=127.0.0.1:8080 doors=1 reload=signal",
];

/// Runs fail2ban-regex on `lines`; returns (matched count, its report).
fn fail2ban_regex<S: AsRef<str>>(lines: &[S]) -> (usize, String) {
    let tool = require("fail2ban-regex", "fail2ban");
    let dir = temp_dir();
    let log = dir.path().join("knock-otp.log");
    let mut file = String::new();
    for line in lines {
        file.push_str(line.as_ref());
        file.push('\n');
    }
    write(&log, &file);
    let filter = kit("fail2ban/filter.d/knock-otp.conf");
    let out = run_ok(Command::new(tool).arg("-v").arg(&log).arg(filter));
    let report = text(&out.stdout);
    // "Lines: 5 lines, 0 ignored, 5 matched, 0 missed"
    let matched = report
        .lines()
        .find(|l| l.starts_with("Lines:"))
        .and_then(|l| l.split(", ").find(|p| p.ends_with(" matched")))
        .and_then(|p| p.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no match count in fail2ban-regex output:\n{report}"));
    (matched, report)
}

/// True when fail2ban-regex's verbose report shows `addr` as a captured host.
fn captured(report: &str, addr: &str) -> bool {
    report.contains(&format!("|      {addr}  "))
}

/// Splits what knock-otp logged into its rejection lines and the others.
fn rejections_and_others(lines: Vec<String>) -> (Vec<String>, Vec<String>) {
    lines.into_iter().partition(|l| l.contains("event=reject "))
}

#[test]
fn fail2ban_filter_catches_every_rejection_with_its_address() {
    if !e2e() {
        return;
    }
    let lines: Vec<&str> = REJECT_LINES.iter().map(|(l, _)| *l).collect();
    let (matched, report) = fail2ban_regex(&lines);
    assert_eq!(
        matched,
        lines.len(),
        "not every rejection matched:\n{report}"
    );
    for (_, addr) in REJECT_LINES {
        assert!(
            captured(&report, addr),
            "{addr} was not captured:\n{report}"
        );
    }
}

#[test]
fn fail2ban_filter_ignores_issue_and_start_lines() {
    if !e2e() {
        return;
    }
    let (matched, report) = fail2ban_regex(OTHER_LINES);
    assert_eq!(matched, 0, "a line that is no rejection matched:\n{report}");
}

#[test]
fn fail2ban_filter_matches_every_rejection_a_real_run_logs_and_nothing_else() {
    if !e2e() {
        return;
    }
    let stack = Stack::start();
    let now = unix_now();
    let refused = [
        format!("/generate.php?time={now}&code=0123456789abcdef0123456789abcdef"),
        Stack::legacy_path("127.0.0.1", now - 60),
        format!("/generate.php?time={now}"),
        "/generate.php?code=0123456789abcdef0123456789abcdef".to_owned(),
    ];
    for path in &refused {
        assert_eq!(stack.nginx.get(path, &[]).status, 418, "{path}");
    }
    let issued = stack.nginx.get(&Stack::legacy_path("127.0.0.1", now), &[]);
    assert_eq!(issued.status, 200, "{}", issued.body);
    stack.wait_for_log("event=reject ", refused.len());
    stack.wait_for_log("event=issue ", 1);

    let (rejections, others) = rejections_and_others(stack.otp.proc.out.snapshot());
    assert_eq!(rejections.len(), refused.len(), "{rejections:#?}");
    let mut reasons: Vec<&str> = rejections
        .iter()
        .filter_map(|l| l.split(" reason=").nth(1)?.split(' ').next())
        .collect();
    reasons.sort_unstable();
    reasons.dedup();
    assert!(reasons.len() >= 3, "too few reasons: {reasons:?}");
    assert!(
        rejections.iter().all(|l| l.contains(" addr=127.0.0.1 ")),
        "{rejections:#?}"
    );

    let (matched, report) = fail2ban_regex(&rejections);
    assert_eq!(
        matched,
        rejections.len(),
        "a real rejection was missed:\n{report}"
    );
    assert!(
        captured(&report, "127.0.0.1"),
        "127.0.0.1 was not captured:\n{report}"
    );
    assert!(
        others.iter().any(|l| l.contains("event=start ")),
        "{others:#?}"
    );
    let (matched, report) = fail2ban_regex(&others);
    assert_eq!(matched, 0, "a line that is no rejection matched:\n{report}");
}

/// The line knock-otp logs when an address runs out of rejection budget is a
/// rejection like the others and must count for fail2ban too.
#[test]
fn fail2ban_filter_matches_the_over_budget_line_of_a_real_run() {
    if !e2e() {
        return;
    }
    require("curl", "curl");
    let dir = temp_dir();
    let config = write_config(dir.path(), "rejects_per_minute = 1\nreject_burst = 2");
    let otp = KnockOtp::start(&config, &[]);
    for _ in 0..3 {
        let (status, _) = curl(&otp.url("time=1&code=x"), &[]);
        assert_eq!(status, 418);
    }
    otp.proc.out.wait_for_nth(
        "event=reject addr=127.0.0.1 reason=over-budget",
        1,
        LOG_WAIT,
    );

    let (rejections, _) = rejections_and_others(otp.proc.out.snapshot());
    let (matched, report) = fail2ban_regex(&rejections);
    assert_eq!(
        matched,
        rejections.len(),
        "a real rejection was missed:\n{report}"
    );
}

#[test]
fn fail2ban_accepts_the_jail() {
    if !e2e() {
        return;
    }
    let client = require("fail2ban-client", "fail2ban");
    let dir = temp_dir();
    let conf = dir.path().join("fail2ban");
    // The stock configuration, without Debian's own jails (their log files
    // may not exist here), plus the kit's filter and jail.
    run_ok(Command::new("cp").arg("-r").arg("/etc/fail2ban").arg(&conf));
    fs::remove_dir_all(conf.join("jail.d")).unwrap();
    write(
        &conf.join("jail.d/knock-otp.conf"),
        &read(&kit("fail2ban/jail.d/knock-otp.conf")),
    );
    write(
        &conf.join("filter.d/knock-otp.conf"),
        &read(&kit("fail2ban/filter.d/knock-otp.conf")),
    );
    run_ok(Command::new(&client).arg("-c").arg(&conf).arg("-t"));
    let dump = text(&run_ok(Command::new(&client).arg("-c").arg(&conf).arg("-d")).stdout);
    for expected in [
        "['add', 'knock-otp', 'systemd']",
        "_SYSTEMD_UNIT=knock-otp.service",
        "http,https",
    ] {
        assert!(
            dump.contains(expected),
            "the jail lacks `{expected}`:\n{dump}"
        );
    }
}
