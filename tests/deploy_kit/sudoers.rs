//! sudoers.d/knock-otp, as shipped and with its parallel-doors rule
//! uncommented, checked by visudo.

use std::process::Command;

use crate::common::{e2e, require};
use crate::{kit, read, run_ok, temp_dir, write};

#[test]
fn sudoers_drop_in_passes_visudo() {
    if !e2e() {
        return;
    }
    let visudo = require("visudo", "sudo");
    let file = kit("sudoers.d/knock-otp");
    run_ok(Command::new(&visudo).arg("-csf").arg(&file));

    // The commented parallel-doors rule must be valid once uncommented.
    let dir = temp_dir();
    let variant = dir.path().join("knock-otp");
    write(
        &variant,
        &read(&file).replace("#knock-otp ALL", "knock-otp ALL"),
    );
    run_ok(Command::new(&visudo).arg("-csf").arg(&variant));
}
