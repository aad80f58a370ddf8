//! `knock-otp demo`: the whole loop on this machine, on built-in
//! defaults. An ephemeral key and door file live in a temporary directory;
//! as root with knockd installed, a knockd on `lo` guards a door whose
//! only command records the opening. Prints the commands to try it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::cli::DemoArgs;
use crate::config::{RawClient, RawConfig, RawDoor};
use crate::error::StartupError;
use crate::settings::Settings;

/// A knockd started for the demo; killed and reaped when dropped.
struct DemoKnockd(Child);

impl Drop for DemoKnockd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(args: &DemoArgs) -> Result<(), StartupError> {
    let dir = tempfile::Builder::new()
        .prefix("knock-otp-demo.")
        .tempdir()
        .map_err(|source| StartupError::Io {
            action: "cannot create a demo directory in",
            path: std::env::temp_dir(),
            source,
        })?;
    let dir_path = dir.path().to_path_buf();
    let key_file = dir_path.join("key");
    write_private(&key_file, &random_key()?)?;

    let with_knockd = !args.no_knockd
        && nix::unistd::geteuid().is_root()
        && crate::check::find_program("knockd").is_some();
    let mut raw = RawConfig::default();
    raw.http.listen = args.listen.to_string();
    raw.clients.push(RawClient {
        name: "demo".into(),
        key_file: path_text(&key_file),
        scheme: "legacy-md5".into(),
    });
    let door_file = dir_path.join("door-0.seq");
    let mut door = RawDoor {
        sequence_file: path_text(&door_file),
        ..RawDoor::default()
    };
    let _knockd = if with_knockd {
        let pidfile = dir_path.join("knockd.pid");
        let knockd = start_knockd(&dir_path, &door_file, &pidfile)?;
        door.pidfile = path_text(&pidfile);
        raw.knockd.reload = "signal".into();
        Some(knockd)
    } else {
        raw.knockd.reload = "none".into();
        None
    };
    raw.knockd.doors.push(door);
    let settings = Settings::from_raw(&raw).map_err(|problems| StartupError::Config {
        file: "(demo defaults)".into(),
        problems,
    })?;
    crate::http::serve(settings, None, |addr| {
        print_instructions(addr, &dir_path, with_knockd)
    })
}

fn random_key() -> Result<String, StartupError> {
    let mut bytes = [0u8; 18];
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut bytes)
        .map_err(|e| StartupError::Other(format!("cannot draw a demo key: {e}")))?;
    Ok(hex::encode(bytes))
}

fn write_private(path: &Path, text: &str) -> Result<(), StartupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| StartupError::Io {
        action: "cannot write",
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Starts knockd on `lo` in the foreground and waits until it listens:
/// a SIGHUP before knockd has installed its handler would kill it.
fn start_knockd(dir: &Path, door_file: &Path, pidfile: &Path) -> Result<DemoKnockd, StartupError> {
    let conf = dir.join("knockd.conf");
    let openings = dir.join("openings.log");
    let text = format!(
        "[options]\n  LogFile = {log}\n[demo]\n  one_time_sequences = {door}\n  seq_timeout = 10\n \
             tcpflags = syn\n  \
         start_command = /bin/sh -c 'echo \"%IP% opened the door\" >> {open}'\n",
        log = dir.join("knockd.log").display(),
        door = door_file.display(),
        open = openings.display(),
    );
    write_private(&conf, &text)?;
    // knockd refuses a one-time file without a valid line; serve replaces these decoys.
    write_private(door_file, " 1:tcp\n 2:tcp\n")?;
    let mut child = Command::new("knockd")
        .args(["-v", "-i", "lo", "-c"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| StartupError::Io {
            action: "cannot start",
            path: "knockd".into(),
            source,
        })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let knockd = DemoKnockd(child);
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with("listening on"));
    if !ready {
        return Err(StartupError::Other(
            "knockd exited before listening on lo; is another knockd using it?".into(),
        ));
    }
    // Keep draining knockd's verbose output so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    write_private(pidfile, &format!("{}\n", knockd.0.id()))?;
    Ok(knockd)
}

fn print_instructions(addr: std::net::SocketAddr, dir: &Path, with_knockd: bool) {
    let d = dir.display();
    let ip = addr.ip();
    println!("knock-otp demo: serving http://{addr}/generate.php for client \"demo\" (legacy-md5)");
    println!("  key file: {d}/key   door file: {d}/door-0.seq");
    println!();
    println!("Fetch a sequence the way the legacy ssh ProxyCommand does:");
    println!("  KEY=$(cat {d}/key); T=$(date +%s)");
    println!("  C=$(printf '%s' \"{ip}$KEY$T\" | md5sum | cut -d' ' -f1)");
    println!("  SEQ=$(curl -sS \"http://{addr}/generate.php?time=$T&code=$C\"); echo \"$SEQ\"");
    if with_knockd {
        println!("Knock it (knockd is listening on lo):");
        println!("  knock {ip} -d 100 $SEQ");
        println!("See the door open:");
        println!("  cat {d}/openings.log");
    } else {
        println!("(no knockd: run the demo as root with knockd installed to knock for real)");
    }
    println!();
    println!("Stop with Ctrl-C; the demo directory is removed.");
}
