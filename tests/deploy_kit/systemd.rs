//! The systemd side: the units pass `systemd-analyze verify`, the signal
//! variant is hardened per `systemd-analyze security`, the sudo variant sets
//! nothing under which sudo cannot become root, and the sysusers file
//! creates the user and group.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::{e2e, require};
use crate::{kit, output, read, run_ok, temp_dir, text, write, write_executable};

/// The units as an administrator installs them, in a scratch unit directory,
/// with knock-otp's binary replaced by a stub (verify checks ExecStart
/// paths) and Debian's knockd.service beside our drop-in.
fn unit_dir() -> tempfile::TempDir {
    let dir = temp_dir();
    let stub = dir.path().join("bin/knock-otp");
    write_executable(&stub, "#!/bin/sh\nexit 0\n");
    let stub = stub.to_string_lossy().into_owned();
    for (from, to) in [
        ("deploy/systemd/knock-otp.service", "knock-otp.service"),
        (
            "deploy/systemd/sudo/knock-otp.service",
            "sudo/knock-otp.service",
        ),
        ("deploy/systemd/knockd@.service", "knockd@.service"),
        (
            "deploy/systemd/knockd.service.d/knock-otp.conf",
            "knockd.service.d/knock-otp.conf",
        ),
    ] {
        let unit = read(&kit(from)).replace("/usr/local/bin/knock-otp", &stub);
        write(&dir.path().join(to), &unit);
    }
    let debian = Path::new("/lib/systemd/system/knockd.service");
    assert!(
        debian.is_file(),
        "{} is missing; install the Debian package `knockd`",
        debian.display()
    );
    write(&dir.path().join("knockd.service"), &read(debian));
    dir
}

/// Runs `systemd-analyze verify ./UNIT` in `dir`: (succeeded, all it said).
fn analyze_verify(analyze: &Path, dir: &Path, unit: &str) -> (bool, String) {
    let out = output(
        Command::new(analyze)
            .arg("verify")
            .arg(format!("./{unit}"))
            .current_dir(dir),
    );
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    (out.status.success(), said)
}

/// Makes sure `systemd-analyze verify` works here at all, and reads drop-ins
/// next to a unit, so that a clean result below means something.
fn verify_works_here(analyze: &Path) {
    let dir = temp_dir();
    write(
        &dir.path().join("probe.service"),
        "[Service]\nExecStart=/bin/true\n",
    );
    write(
        &dir.path().join("probe.service.d/x.conf"),
        "[Service]\nNoSuchKnockOtpKey=1\n",
    );
    let (ok, said) = analyze_verify(analyze, dir.path(), "probe.service");
    assert!(
        ok && said.contains("NoSuchKnockOtpKey"),
        "systemd-analyze verify does not work on this machine (a trivial unit with a \
         bad drop-in key gave success={ok}; output:\n{said}); the units were not checked"
    );
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    if !e2e() {
        return;
    }
    let analyze = require("systemd-analyze", "systemd");
    verify_works_here(&analyze);
    let dir = unit_dir();
    for unit in [
        "knock-otp.service",
        "sudo/knock-otp.service",
        "knockd@.service",
        "knockd@0.service",
        "knockd.service",
    ] {
        let (ok, said) = analyze_verify(&analyze, dir.path(), unit);
        assert!(
            ok && said.trim().is_empty(),
            "systemd-analyze verify {unit} complained (success={ok}):\n{said}"
        );
    }
}

#[test]
fn signal_variant_unit_is_hardened_by_systemd_analyze_security() {
    if !e2e() {
        return;
    }
    let analyze = require("systemd-analyze", "systemd");
    let dir = unit_dir();
    let out = run_ok(
        Command::new(&analyze)
            .args([
                "security",
                "--offline=yes",
                "--no-pager",
                "./knock-otp.service",
            ])
            .current_dir(dir.path()),
    );
    let report = text(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for knock-otp.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(
        exposure <= 2.5,
        "exposure {exposure} is above 2.5:\n{report}"
    );
}

/// Options that systemd.exec(5) says imply NoNewPrivileges=yes, and others
/// under which sudo cannot become root.
const BREAKS_SUDO: &[&str] = &[
    "NoNewPrivileges",
    "DynamicUser",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "PrivateDevices",
    "ProtectClock",
    "ProtectHostname",
    "ProtectKernelLogs",
    "ProtectKernelModules",
    "ProtectKernelTunables",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "SystemCallLog",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "PrivateUsers",
];

#[test]
fn sudo_variant_unit_sets_nothing_that_stops_sudo() {
    if !e2e() {
        return;
    }
    let unit = read(&kit("deploy/systemd/sudo/knock-otp.service"));
    for line in unit.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let harmless = value.is_empty() || ["no", "false", "0", "off"].contains(&value);
        assert!(
            !BREAKS_SUDO.contains(&key) || harmless,
            "the sudo variant sets `{line}`, under which sudo cannot gain root"
        );
    }
    assert!(
        unit.contains("NoNewPrivileges=no"),
        "the sudo variant should say NoNewPrivileges=no"
    );
}

#[test]
fn sysusers_file_creates_the_user_and_group() {
    if !e2e() {
        return;
    }
    let sysusers = require("systemd-sysusers", "systemd");
    let root = temp_dir();
    fs::create_dir_all(root.path().join("etc")).unwrap();
    run_ok(
        Command::new(&sysusers)
            .arg(format!("--root={}", root.path().display()))
            .arg(kit("deploy/systemd/knock-otp.sysusers")),
    );
    let passwd = read(&root.path().join("etc/passwd"));
    let group = read(&root.path().join("etc/group"));
    assert!(
        passwd.lines().any(|l| l.starts_with("knock-otp:")),
        "no user in:\n{passwd}"
    );
    assert!(
        group.lines().any(|l| l.starts_with("knock-otp:")),
        "no group in:\n{group}"
    );
}
