//! `http.send-all` (contract 0.4) against a real server on loopback, through the probe
//! guest: the requests really are in flight together, no more than the cap at once, each
//! checked as `send` checks it, sharing one body budget, and never past the deadline.

use operator::runtime::{Limits, PluginError};
use operator_tests::guests;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::load;

/// Answers every request after `delay` with a body of `body_bytes`, one connection per
/// request, and counts how many it was serving at once.
struct SlowServer {
    port: u16,
    in_flight: Arc<AtomicUsize>,
    most_at_once: Arc<AtomicUsize>,
}

impl SlowServer {
    fn start(delay: Duration, body_bytes: usize) -> SlowServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most_at_once = Arc::new(AtomicUsize::new(0));
        let (now, most) = (in_flight.clone(), most_at_once.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (now, most) = (now.clone(), most.clone());
                std::thread::spawn(move || serve(stream, delay, body_bytes, &now, &most));
            }
        });
        SlowServer {
            port,
            in_flight,
            most_at_once,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn serve(
    mut s: TcpStream,
    delay: Duration,
    body_bytes: usize,
    now: &AtomicUsize,
    most: &AtomicUsize,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
    most.fetch_max(n, Ordering::SeqCst);
    std::thread::sleep(delay);
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Length: {body_bytes}\r\nConnection: close\r\n\r\n"
    );
    let _ = s.write_all(&vec![b'x'; body_bytes]);
    now.fetch_sub(1, Ordering::SeqCst);
}

/// Each answer's outcome, in the order the requests were given.
async fn send_all(
    limits: Limits,
    settings: &[(&str, String)],
) -> (Result<Vec<String>, PluginError>, Duration) {
    let mut all = vec![("mode", "send-all".to_string())];
    all.extend(settings.iter().cloned());
    let plugin = load(guests::GUEST_PROBE, limits, &all).await.unwrap();
    let mut session = plugin.session().await.unwrap();
    let started = Instant::now();
    let obs = session.observe().await;
    let took = started.elapsed();
    let outcomes = obs.map(|o| {
        let o = o.expect("the probe observes");
        o.events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                assert_eq!(
                    e.message,
                    format!("send-all-{i}"),
                    "answers keep their order"
                );
                e.attributes["outcome"].clone()
            })
            .collect()
    });
    (outcomes, took)
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_go_out_together_at_most_the_cap_at_once_and_answer_in_order() {
    let server = SlowServer::start(Duration::from_millis(200), 10);
    let limits = Limits::default();
    let (outcomes, took) = send_all(
        limits,
        &[("target", server.url()), ("count", "40".to_string())],
    )
    .await;
    let outcomes = outcomes.unwrap();
    assert_eq!(outcomes.len(), 40);
    assert!(outcomes.iter().all(|o| o == "ok: 10 bytes"), "{outcomes:?}");
    let most = server.most_at_once.load(Ordering::SeqCst);
    assert!(
        most > 1 && most <= limits.http.max_in_flight,
        "{most} at once, cap {}",
        limits.http.max_in_flight
    );
    // One after another they take 8 s; in waves of 16, three waves of 200 ms.
    assert!(
        took < Duration::from_secs(3) && took >= Duration::from_millis(600),
        "{took:?}"
    );
    assert_eq!(server.in_flight.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_request_is_checked_as_send_checks_it() {
    let server = SlowServer::start(Duration::ZERO, 3);
    let hidden = SlowServer::start(Duration::ZERO, 3);
    let limits = Limits {
        http: operator::runtime::limits::HttpLimits {
            max_requests_per_call: 5,
            ..Limits::default().http
        },
        ..Limits::default()
    };
    let (outcomes, _) = send_all(
        limits,
        &[
            ("target", server.url()),
            ("count", "8".to_string()),
            // A plain value, never a grant: denied in its place, the others still go.
            ("sneaky", format!("{}/hidden", hidden.url())),
        ],
    )
    .await;
    let outcomes = outcomes.unwrap();
    assert_eq!(outcomes.len(), 9);
    assert!(outcomes[1].starts_with("denied: "), "{}", outcomes[1]);
    assert_eq!(hidden.most_at_once.load(Ordering::SeqCst), 0, "never sent");
    for i in [0, 2, 3, 4] {
        assert_eq!(outcomes[i], "ok: 3 bytes", "request {i}");
    }
    // The per-call cap counts the batch's requests one by one, the refused one included.
    for (i, o) in outcomes.iter().enumerate().skip(5) {
        assert!(
            o.starts_with("denied: ") && o.contains("request cap"),
            "request {i}: {o}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_holds_no_more_response_bytes_than_one_request_may() {
    const MIB: usize = 1024 * 1024;
    let server = SlowServer::start(Duration::ZERO, MIB);
    let limits = Limits {
        http: operator::runtime::limits::HttpLimits {
            max_body_bytes: 5 * MIB / 2,
            ..Limits::default().http
        },
        ..Limits::default()
    };
    let (outcomes, _) = send_all(
        limits,
        &[("target", server.url()), ("count", "6".to_string())],
    )
    .await;
    let outcomes = outcomes.unwrap();
    let ok = outcomes.iter().filter(|o| o.starts_with("ok: ")).count();
    let too_large = outcomes
        .iter()
        .filter(|o| o.starts_with("too-large: "))
        .count();
    // Six 1 MiB answers against one 2.5 MiB budget: two fit at most, the rest are refused.
    assert!(ok <= 2, "{outcomes:?}");
    assert_eq!(ok + too_large, 6, "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_slow_answers_ends_at_the_deadline() {
    let server = SlowServer::start(Duration::from_secs(20), 1);
    let limits = Limits {
        deadline: Duration::from_millis(500),
        ..Limits::default()
    };
    let (outcomes, took) = send_all(
        limits,
        &[("target", server.url()), ("count", "30".to_string())],
    )
    .await;
    // The guest asked for 60 s per request; the call's deadline wins, for queued ones too.
    assert!(
        matches!(&outcomes, Err(PluginError::Deadline { call, .. }) if call == "observe")
            || outcomes
                .as_ref()
                .is_ok_and(|o| o.iter().all(|o| o == "timeout")),
        "{outcomes:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
}
