//! Test guest: tries every way out of the sandbox it can think of, and reports each
//! attempt's outcome as an event (`blocked: ...` or `ESCAPED: ...`).
//!
//! Settings: `probe_port` (a loopback port with a listener; deliberately not a URL, so it
//! is not allowlisted), `allowed` (an allowlisted HTTP origin), `redirector` (an
//! allowlisted origin that redirects to the probe port), `redis_url` (an allowlisted Redis
//! origin).

use operator_sdk::prelude::*;

struct Escape;

fn outcome<T, E: std::fmt::Display>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "ESCAPED: it worked".into(),
        Err(e) => format!("blocked: {e}"),
    }
}

fn attempt(name: &str, result: String) -> Event {
    Event {
        timestamp_ms: now_ms(),
        component: String::new(),
        severity: Severity::Info,
        message: name.into(),
        attributes: vec![kv("outcome", result)],
    }
}

impl Subject for Escape {
    fn metadata() -> Metadata {
        Metadata {
            name: "escape".into(),
            version: "0.0.0".into(),
            description: "tries to leave the sandbox".into(),
            settings: vec![
                Setting::origin("allowed", "a server the plugin may reach"),
                Setting::origin("redirector", "a server that redirects elsewhere"),
                Setting::origin("redis_url", "a Redis the plugin may read"),
                Setting::value("probe_port", "a loopback port it must not reach"),
                Setting::value("sneaky", "a URL given as a plain value: never a grant"),
            ],
            invariants: vec![],
            actions: vec![],
            failure_modes: vec![],
        }
    }

    fn observe() -> Result<Observation, ObserveError> {
        let port = config::get("probe_port").unwrap_or_default();
        let allowed = config::get("allowed").unwrap_or_default();
        let redirector = config::get("redirector").unwrap_or_default();
        let redis_url = config::get("redis_url").unwrap_or_default();
        let mut events = vec![
            attempt(
                "cloud-metadata",
                outcome(http::get_text("http://169.254.169.254/latest/meta-data/")),
            ),
            attempt(
                "loopback-listener",
                outcome(http::get_text(&format!("http://127.0.0.1:{port}/"))),
            ),
            attempt(
                "post-in-read-only-phase",
                outcome(http::send_json("POST", &http::join(&allowed, "/x"), &"{}")),
            ),
            attempt(
                "redirect-to-listener",
                outcome(http::get_text(&http::join(&redirector, "/go"))),
            ),
            attempt(
                "redis-write",
                outcome(redis::command(&redis_url, &["SET", "k", "v"])),
            ),
            attempt(
                "redis-unlisted-origin",
                outcome(redis::command(
                    &format!("redis://127.0.0.1:{port}"),
                    &["PING"],
                )),
            ),
            attempt(
                "raw-socket",
                outcome(std::net::TcpStream::connect(format!("127.0.0.1:{port}"))),
            ),
            attempt(
                "filesystem",
                outcome(std::fs::read_to_string("/etc/hostname")),
            ),
        ];
        let env_count = std::env::vars().count();
        events.push(attempt(
            "environment",
            if env_count == 0 {
                "blocked: no environment variables".into()
            } else {
                format!("ESCAPED: {env_count} variables visible")
            },
        ));
        Ok(Observation {
            timestamp_ms: now_ms(),
            components: vec![],
            metrics: Default::default(),
            events,
            problems: vec![],
        })
    }

    fn check_invariants(_history: &[Observation]) -> Vec<Violation> {
        vec![]
    }

    fn execute(action: String, _params: Vec<Kv>) -> Result<String, ActionError> {
        Err(ActionError::UnknownAction(action))
    }
}

operator_sdk::export_subject!(Escape);
