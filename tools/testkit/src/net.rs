//! Loopback servers for tests, bound to port 0 (the bound port is read back, so nothing can
//! take it in between), and the port helpers for programs that cannot bind port 0.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A port that was free a moment ago. Racy by nature: another process can take it before the
/// caller binds it. Prefer binding port 0 and reading the address back; for a program that
/// cannot, use [`with_fresh_port`], which retries when the bind fails.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Why one attempt of [`with_fresh_port`] failed.
#[derive(Debug)]
pub enum PortAttempt<E> {
    /// The port was taken in the meantime: try another one.
    InUse,
    /// Anything else: stop.
    Failed(E),
}

/// Runs `start` on fresh ports until it does not report [`PortAttempt::InUse`], at most
/// `attempts` times. For servers that cannot bind port 0 (redis-server, prometheus).
pub fn with_fresh_port<T, E: std::fmt::Display>(
    what: &str,
    attempts: usize,
    mut start: impl FnMut(u16) -> Result<T, PortAttempt<E>>,
) -> T {
    let mut taken = Vec::new();
    for _ in 0..attempts {
        let port = free_port();
        match start(port) {
            Ok(v) => return v,
            Err(PortAttempt::InUse) => taken.push(port),
            Err(PortAttempt::Failed(e)) => panic!("could not start {what}: {e}"),
        }
    }
    panic!("could not start {what}: every port tried was taken before it could bind ({taken:?})");
}

/// A TCP listener that only counts accepted connections.
pub struct CountingListener {
    pub port: u16,
    pub accepted: Arc<AtomicUsize>,
}

impl CountingListener {
    pub fn start() -> CountingListener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("bound address").port();
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
        let port = listener.local_addr().expect("bound address").port();
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

    /// What every later request gets; for a 3xx, `body` is the redirect target.
    pub fn set(&self, status: u16, body: &str) {
        *self.body.lock().unwrap_or_else(|p| p.into_inner()) = (status, body.to_string());
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
    let (status, text) = body.lock().unwrap_or_else(|p| p.into_inner()).clone();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_fresh_port_retries_only_while_the_port_is_taken() {
        let mut calls = 0;
        let port = with_fresh_port::<u16, String>("a flaky server", 5, |p| {
            calls += 1;
            if calls < 3 {
                Err(PortAttempt::InUse)
            } else {
                Ok(p)
            }
        });
        assert_eq!(calls, 3);
        assert_ne!(port, 0);
    }

    #[test]
    #[should_panic(expected = "could not start a broken server: no such binary")]
    fn with_fresh_port_stops_on_other_errors() {
        with_fresh_port::<(), &str>("a broken server", 5, |_| {
            Err(PortAttempt::Failed("no such binary"))
        });
    }

    #[test]
    fn json_server_answers_with_the_current_body() {
        let s = JsonServer::start("{\"a\":1}");
        assert_eq!(
            crate::http::http("GET", &s.url(), "").unwrap(),
            (200, "{\"a\":1}".to_string())
        );
        s.set(503, "{}");
        assert_eq!(crate::http::http("GET", &s.url(), "").unwrap().0, 503);
        assert_eq!(s.requests.load(Ordering::SeqCst), 2);
    }
}
