//! Real servers on loopback for tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
pub use testkit::wait_for;

/// A TCP listener that only counts accepted connections.
pub struct CountingListener {
    pub port: u16,
    pub accepted: Arc<AtomicUsize>,
}

impl CountingListener {
    pub fn start() -> CountingListener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if conn.is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        CountingListener { port, accepted }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A minimal HTTP/1.1 server answering every request with the current body (JSON).
pub struct JsonServer {
    pub port: u16,
    body: Arc<Mutex<(u16, String)>>,
    pub requests: Arc<AtomicUsize>,
}

impl JsonServer {
    pub fn start(initial: &str) -> JsonServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let body = Arc::new(Mutex::new((200, initial.to_string())));
        let requests = Arc::new(AtomicUsize::new(0));
        let (b, r) = (body.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (b, r) = (b.clone(), r.clone());
                std::thread::spawn(move || serve(conn, &b, &r));
            }
        });
        JsonServer {
            port,
            body,
            requests,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, status: u16, body: &str) {
        *self.body.lock().unwrap() = (status, body.to_string());
    }
}

fn serve(mut conn: TcpStream, body: &Mutex<(u16, String)>, requests: &AtomicUsize) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request per connection is enough for the tests: read the head, answer, close.
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let (status, text) = body.lock().unwrap().clone();
    // For a 3xx the body is the redirect target.
    let resp = if (300..400).contains(&status) {
        format!(
            "HTTP/1.1 {status} X\r\nlocation: {text}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
    } else {
        format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        )
    };
    let _ = conn.write_all(resp.as_bytes());
}
