//! nginx with the kit's two snippets: the zone at http level and the
//! locations inside a TLS server block, as README says to install them.
//! `Nginx` runs one such server, in the foreground, in its own directory;
//! the tests here check the configuration and what nginx forwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{Proc, e2e, require, wait_for_file};
use crate::stub_server::{Routes, StubServer};
use crate::{free_port, kit, read, run_ok, temp_dir, text, write};

/// Where the kit's snippet sends requests; tests move it to their upstream.
const KIT_UPSTREAM: &str = "http://127.0.0.1:8080;";

/// A self-signed certificate and key in `dir`, as the test's TLS identity.
fn self_signed_certificate(dir: &Path) {
    run_ok(
        Command::new(require("openssl", "openssl"))
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-subj", "/CN=localhost", "-days", "1", "-keyout"])
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem")),
    );
}

/// A throwaway nginx.conf around the two snippets: TLS server on `port`,
/// every path nginx writes inside `dir`, upstream moved to `upstream`
/// (`HOST:PORT`), error log on standard error.
fn nginx_conf(dir: &Path, port: u16, upstream: &str) -> PathBuf {
    self_signed_certificate(dir);
    let snippet = read(&kit("nginx/knock-otp.conf"));
    assert!(
        snippet.contains(&format!("proxy_pass {KIT_UPSTREAM}")),
        "nginx/knock-otp.conf no longer proxies to {KIT_UPSTREAM} (this test moves that address)"
    );
    let snippet = snippet.replace(KIT_UPSTREAM, &format!("http://{upstream};"));
    write(&dir.join("knock-otp.conf"), &snippet);
    let d = dir.display();
    let zone = kit("nginx/knock-otp-zone.conf");
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log stderr notice;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         include {zone};\n  server {{\n    listen 127.0.0.1:{port} ssl;\n\
         ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;\n\
         location ~ \\.php$ {{ return 403; }}\n    include {d}/knock-otp.conf;\n  }}\n}}\n",
        zone = zone.display()
    );
    let path = dir.join("nginx.conf");
    write(&path, &conf);
    path
}

/// `nginx -p DIR -e stderr -c CONF`: nothing read or written outside DIR.
fn nginx_command(dir: &Path, conf: &Path) -> Command {
    let mut cmd = Command::new(require("nginx", "nginx"));
    cmd.arg("-p")
        .arg(dir)
        .args(["-e", "stderr", "-c"])
        .arg(conf);
    cmd
}

/// A running nginx serving the kit's snippets over TLS on 127.0.0.1:`port`.
/// Killed and reaped on drop; its error log is reprinted if the test fails.
pub struct Nginx {
    pub port: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

/// What curl got: the status, the header block (lowercase) and the body.
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Nginx {
    /// Starts nginx in front of `upstream` (`HOST:PORT`) and waits until it
    /// listens.
    pub fn start(upstream: &str) -> Nginx {
        let dir = temp_dir();
        let port = free_port();
        let conf = nginx_conf(dir.path(), port, upstream);
        let proc = Proc::spawn("nginx", nginx_command(dir.path(), &conf));
        // nginx writes its pid file after its listening sockets are open.
        wait_for_file(&dir.path().join("nginx.pid"), Duration::from_secs(10));
        Nginx {
            port,
            _proc: proc,
            _dir: dir,
        }
    }

    /// One HTTPS GET with `curl -ks`, as the legacy client makes it.
    pub fn get(&self, path: &str, headers: &[&str]) -> Reply {
        let mut cmd = Command::new(require("curl", "curl"));
        cmd.args(["-ksS", "-i", "--max-time", "10", "-w", "\n%{http_code}"]);
        for header in headers {
            cmd.arg("-H").arg(header);
        }
        let out = run_ok(cmd.arg(format!("https://127.0.0.1:{}{path}", self.port)));
        let all = text(&out.stdout);
        let (reply, status) = all.rsplit_once('\n').unwrap_or(("", "0"));
        let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((reply, ""));
        Reply {
            status: status.trim().parse().unwrap_or(0),
            head: head.to_lowercase(),
            body: body.to_owned(),
        }
    }
}

#[test]
fn nginx_accepts_the_snippets_inside_a_tls_server() {
    if !e2e() {
        return;
    }
    let dir = temp_dir();
    let conf = nginx_conf(dir.path(), free_port(), "127.0.0.1:8080");
    run_ok(nginx_command(dir.path(), &conf).arg("-t"));
}

#[test]
fn nginx_passes_only_the_real_client_address_and_limits_the_rate() {
    if !e2e() {
        return;
    }
    let upstream = StubServer::start(Routes::from([
        ("/generate.php", (418, "teapot".to_owned())),
        ("/knock-otp/ip", (200, "127.0.0.1\n".to_owned())),
    ]));
    let nginx = Nginx::start(&format!("127.0.0.1:{}", upstream.port));

    let spoof = [
        "X-Real-IP: 192.0.2.66",
        "X-Forwarded-For: 192.0.2.66",
        "Forwarded: for=192.0.2.66",
    ];
    let reply = nginx.get("/generate.php?time=1&code=x", &spoof);
    assert_eq!(
        reply.status, 418,
        "the teapot must come through unchanged:\n{}",
        reply.head
    );
    assert!(
        reply.head.contains("cache-control: no-store"),
        "no Cache-Control: no-store:\n{}",
        reply.head
    );
    assert_eq!(nginx.get("/knock-otp/ip", &spoof).status, 200);
    for head in upstream.requests() {
        assert!(
            head.contains("x-real-ip: 127.0.0.1\r\n"),
            "X-Real-IP not from nginx:\n{head}"
        );
        assert!(
            !head.contains("192.0.2.66"),
            "a client-supplied address got through:\n{head}"
        );
    }

    // Other paths stay with the rest of the server block.
    let before = upstream.requests().len();
    assert_eq!(nginx.get("/other.php", &[]).status, 403);
    assert_eq!(
        upstream.requests().len(),
        before,
        "/other.php reached knock-otp"
    );

    // burst=10 nodelay: a quick run of requests soon gets 429.
    let statuses: Vec<u16> = (0..15)
        .map(|_| nginx.get("/generate.php", &[]).status)
        .collect();
    assert!(
        statuses.contains(&429),
        "no request was rate-limited: {statuses:?}"
    );
}
