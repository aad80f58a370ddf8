//! A minimal HTTP server standing in for knock-otp: behind nginx, to see
//! exactly which headers nginx forwards, and for the client helper, to see
//! exactly what it asks.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::text;

/// The answer the stub gives to each path; unknown paths get 404.
pub type Routes = HashMap<&'static str, (u16, String)>;

pub struct StubServer {
    pub port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl StubServer {
    pub fn start(routes: Routes) -> StubServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind the stub server");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (requests.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    answer(stream, &routes, &seen);
                }
            }
        });
        StubServer {
            port,
            requests,
            stop,
        }
    }

    /// The request heads received so far, lowercase.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for StubServer {
    fn drop(&mut self) {
        // The accept loop blocks: one last connection wakes it to stop.
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn answer(mut stream: TcpStream, routes: &Routes, seen: &Mutex<Vec<String>>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    let head = text(&head).to_lowercase();
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    seen.lock().unwrap().push(head);
    let path = target.split('?').next().unwrap_or("/");
    let (status, body) = routes
        .get(path)
        .cloned()
        .unwrap_or((404, "not found".into()));
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}

/// The query parameters of the first request for `path`.
pub fn query_of(requests: &[String], path: &str) -> HashMap<String, String> {
    let target = requests
        .iter()
        .filter_map(|r| r.split_whitespace().nth(1))
        .find(|t| t.starts_with(path))
        .unwrap_or_else(|| panic!("no request for {path} among {requests:?}"));
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
