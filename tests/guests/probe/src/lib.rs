//! Test guest: probes one host policy per observe, chosen by the `mode` setting, and
//! reports every attempt as an event whose `outcome` attribute is `ok: ...`,
//! `denied: ...` (the host refused it), `timeout: ...` or `error: ...` (anything else).
//!
//! Modes:
//! - `smuggle`: GETs to `target` carrying a body, a `Host` header, an
//!   `X-HTTP-Method-Override` header: ways to turn a read into something else.
//! - `sneaky`: a GET to the URL in `sneaky`, a setting declared as a plain value.
//! - `redis-get`: `GET probe` on the Redis in `redis`.
//! - `redis-many`: `count` GETs on the Redis in `redis`, each through a different URL
//!   string for the same server (`vary=query`: a new query string each time; `vary=db`:
//!   databases 0 to 15 in turn).
//! - `send-all`: one `http.send-all` of `count` GETs to `{target}/r/{i}`, with the URL in
//!   `sneaky` (never a grant) in second place when it is set; one event per answer, in
//!   order, named `send-all-{i}`.

use operator_sdk::prelude::*;

struct Probe;

fn http_outcome<T>(r: Result<T, http::Error>) -> String {
    match r {
        Ok(_) => "ok: it was sent".into(),
        Err(e) if e.is_denied() => format!("denied: {e}"),
        Err(e) => format!("error: {e}"),
    }
}

fn redis_outcome(r: Result<redis::Value, redis::Error>) -> String {
    match r {
        Ok(v) => format!("ok: {v:?}").chars().take(200).collect(),
        Err(e) => match e.error {
            redis::RedisError::Denied(_) => format!("denied: {e}"),
            redis::RedisError::Timeout => format!("timeout: {e}"),
            _ => format!("error: {e}"),
        },
    }
}

fn attempt(name: &str, outcome: String) -> Event {
    Event {
        timestamp_ms: now_ms(),
        component: String::new(),
        severity: Severity::Info,
        message: name.into(),
        attributes: vec![kv("outcome", outcome)],
    }
}

fn smuggle(target: &str) -> Vec<Event> {
    let url = http::join(target, "/state");
    vec![
        attempt(
            "get-with-body",
            http_outcome(
                http::Request::new("GET", &url)
                    .body(b"DELETE everything".to_vec())
                    .send(),
            ),
        ),
        attempt(
            "host-header",
            http_outcome(
                http::Request::new("GET", &url)
                    .header("Host", "169.254.169.254")
                    .send(),
            ),
        ),
        attempt(
            "method-override",
            http_outcome(
                http::Request::new("GET", &url)
                    .header("X-HTTP-Method-Override", "DELETE")
                    .send(),
            ),
        ),
    ]
}

fn send_all(target: &str) -> Vec<Event> {
    let count: usize = config::parse_or("count", 8).unwrap_or(8);
    let mut urls: Vec<String> = (0..count)
        .map(|i| http::join(target, &format!("r/{i}")))
        .collect();
    if let Some(sneaky) = config::get("sneaky") {
        urls.insert(1.min(urls.len()), sneaky);
    }
    let answers = http::send_all(
        urls.iter()
            .map(|u| http::Request::new("GET", u).timeout_ms(60_000))
            .collect(),
    );
    answers
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let outcome = match a {
                Ok(r) => format!("ok: {} bytes", r.body.len()),
                Err(http::Error::Transport {
                    error: http::HttpError::TooLarge(n),
                    ..
                }) => format!("too-large: {n}"),
                Err(http::Error::Transport {
                    error: http::HttpError::Timeout,
                    ..
                }) => "timeout".into(),
                Err(e) => http_outcome::<()>(Err(e)),
            };
            attempt(&format!("send-all-{i}"), outcome)
        })
        .collect()
}

fn redis_many(url: &str) -> Vec<Event> {
    let count: usize = config::parse_or("count", 50).unwrap_or(50);
    let vary = config::get("vary").unwrap_or_else(|| "query".into());
    let base = url.trim_end_matches('/');
    (0..count)
        .map(|i| {
            let u = match vary.as_str() {
                "db" => format!("{base}/{}", i % 16),
                _ => format!("{base}/0?attempt={i}"),
            };
            attempt(
                &format!("get-{i}"),
                redis_outcome(redis::command(&u, &["GET", "probe"])),
            )
        })
        .collect()
}

impl Subject for Probe {
    fn metadata() -> Metadata {
        Metadata {
            name: "probe".into(),
            version: "0.0.0".into(),
            description: "probes one host policy per observe".into(),
            settings: vec![
                Setting::value("mode", "smuggle, sneaky, redis-get, redis-many or send-all")
                    .required(),
                Setting::origin("target", "an HTTP server it may read"),
                Setting::origin("redis", "a Redis it may read"),
                Setting::value("sneaky", "a URL given as a plain value: never a grant"),
                Setting::value(
                    "count",
                    "redis-many: how many commands [default: 50]; send-all: how many requests [default: 8]",
                ),
                Setting::value("vary", "redis-many: query or db [default: query]"),
            ],
            invariants: vec![],
            actions: vec![],
            failure_modes: vec![],
        }
    }

    fn observe() -> Result<Observation, ObserveError> {
        let mode = config::require("mode").map_err(ObserveError::Config)?;
        let target = config::get("target").unwrap_or_default();
        let redis_url = config::get("redis").unwrap_or_default();
        let events = match mode.as_str() {
            "smuggle" => smuggle(&target),
            "sneaky" => {
                let url = config::get("sneaky").unwrap_or_default();
                vec![attempt("sneaky", http_outcome(http::get_text(&url)))]
            }
            "redis-get" => vec![attempt(
                "redis-get",
                redis_outcome(redis::command(&redis_url, &["GET", "probe"])),
            )],
            "redis-many" => redis_many(&redis_url),
            "send-all" => send_all(&target),
            other => return Err(ObserveError::Config(format!("unknown mode `{other}`"))),
        };
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

operator_sdk::export_subject!(Probe);
