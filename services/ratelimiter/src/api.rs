//! HTTP API (axum). Every error, including unknown routes, wrong methods and body rejections,
//! is answered as JSON `{"error": "..."}`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value, json};
use tracing::info;

use crate::chaos::{ChaosSettings, MAX_LATENCY_MS};
use crate::config::{MAX_LIMIT, MAX_WINDOW_MS};
use crate::node::{CheckResult, Node, local_now_ms};
use crate::registry;
use crate::script::{DEFAULT_FIELD, estimate};
use crate::store::{Limit, StoreError};

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Keys listed by `GET /v1/counters`.
pub const TOP_COUNTER_KEYS: usize = 20;
const MAX_BODY_BYTES: usize = 64 * 1024;

type AppState = State<Arc<Node>>;

/// A JSON error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": msg.into() }),
        }
    }
    fn bad(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, msg)
    }
    fn unavailable(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, msg)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::unavailable(format!("redis unavailable: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok_json<T: Serialize>(v: T) -> ApiResult {
    Ok((StatusCode::OK, axum::Json(v)).into_response())
}

pub fn router(node: Arc<Node>) -> Router {
    let mut r = Router::new()
        .route("/v1/check", post(check))
        .route("/v1/nodes", get(nodes))
        .route("/v1/counters", get(counters_top))
        .route("/v1/counters/{key}", get(counters_key))
        .route("/v1/counters/{key}/reset", post(reset))
        .route("/v1/limits", get(get_limits))
        .route("/v1/limits/{key}", put(put_limit))
        .route("/v1/keys/{key}/block", post(block))
        .route("/v1/keys/{key}/unblock", post(unblock))
        .route("/v1/drain", post(drain))
        .route("/v1/undrain", post(undrain))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics));
    if node.cfg.chaos {
        r = r.route("/v1/chaos", get(get_chaos).post(set_chaos));
    }
    r.fallback(not_found)
        // Must come after every route: it applies to the method routers registered so far.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(node)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

/// Body bytes or a JSON rejection (413 when too large).
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        ApiError::new(
            r.status(),
            format!("cannot read request body: {}", r.body_text()),
        )
    })
}

/// Parse a JSON object body into `T`.
fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    let classify = |e: serde_json::Error| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad(format!("invalid request body: {e}")),
        _ => ApiError::bad(format!("malformed JSON: {e}")),
    };
    // serde would accept an array for a struct; only objects are valid bodies.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(classify)?;
        return Err(ApiError::bad(
            "invalid request body: expected a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(classify)
}

fn validate_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::bad("key must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad(format!(
            "key is {} bytes long; the maximum is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

fn path_key(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(key) =
        path.map_err(|r| ApiError::bad(format!("invalid key in path: {}", r.body_text())))?;
    validate_key(&key)?;
    Ok(key)
}

/// A positive integer (or, with `allow_zero`, non-negative) no larger than `max`.
fn int_field(
    name: &str,
    v: Option<&Number>,
    allow_zero: bool,
    max: u64,
) -> Result<Option<u64>, ApiError> {
    let Some(n) = v else { return Ok(None) };
    let value = match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => u,
        (None, Some(_)) => {
            return Err(ApiError::bad(format!(
                "{name} must be {}",
                if allow_zero { ">= 0" } else { "> 0" }
            )));
        }
        (None, None) => return Err(ApiError::bad(format!("{name} must be an integer, got {n}"))),
    };
    if value == 0 && !allow_zero {
        return Err(ApiError::bad(format!("{name} must be > 0")));
    }
    if value > max {
        return Err(ApiError::bad(format!("{name} must be <= {max}")));
    }
    Ok(Some(value))
}

fn require_redis(node: &Node) -> Result<(), ApiError> {
    if node.redis_available() {
        Ok(())
    } else {
        Err(ApiError::unavailable(format!(
            "redis unavailable: {}",
            node.redis_status()
        )))
    }
}

#[derive(Deserialize)]
struct CheckBody<'a> {
    #[serde(borrow, default)]
    key: Option<Cow<'a, str>>,
    #[serde(default)]
    cost: Option<Number>,
}

#[derive(Serialize)]
struct CheckResponse<'a> {
    allowed: bool,
    limit: u64,
    remaining: u64,
    retry_after_ms: u64,
    node: &'a str,
    mode: &'static str,
    degraded: bool,
}

async fn check(State(node): AppState, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let bytes = body_bytes(body)?;
    let req: CheckBody = parse_json(&bytes)?;
    let key = req
        .key
        .ok_or_else(|| ApiError::bad("missing field `key`"))?;
    validate_key(&key)?;
    let cost = int_field("cost", req.cost.as_ref(), false, MAX_LIMIT)?.unwrap_or(1);
    match node.check(&key, cost).await {
        CheckResult::Decided {
            outcome,
            limit,
            mode,
            degraded,
        } => {
            let status = if outcome.allowed {
                StatusCode::OK
            } else {
                StatusCode::TOO_MANY_REQUESTS
            };
            let mut resp = (
                status,
                axum::Json(CheckResponse {
                    allowed: outcome.allowed,
                    limit,
                    remaining: outcome.remaining,
                    retry_after_ms: outcome.retry_after_ms,
                    node: &node.cfg.node_id,
                    mode: mode.as_str(),
                    degraded,
                }),
            )
                .into_response();
            if !outcome.allowed {
                let secs = outcome.retry_after_ms.div_ceil(1000).max(1);
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            Ok(resp)
        }
        CheckResult::FailedClosed => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: json!({ "error": "redis unavailable", "mode": "fail-closed" }),
        }),
        CheckResult::Draining => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: json!({ "error": "draining", "mode": "draining" }),
        }),
    }
}

async fn nodes(State(node): AppState) -> ApiResult {
    require_redis(&node)?;
    let nodes = registry::list(&node).await?;
    ok_json(json!({ "nodes": nodes }))
}

/// This node's view of one key (see README for the fields).
async fn key_view(node: &Node, key: &str) -> Value {
    let peek = if node.redis_available() {
        node.store.peek(key).await.ok()
    } else {
        None
    };
    let local_now = local_now_ms();
    let (limit, window, now, blocked) = match &peek {
        Some(p) => (p.limit, p.window_ms, p.now_ms, Some(p.blocked)),
        None => {
            let l = node.cached_limit(key);
            (l.limit, l.window_ms.max(1), local_now, None)
        }
    };
    let index = now / window;
    let start = index * window;
    let elapsed = now - start;
    let local = node.local.view(key, window, local_now);
    let stats = node.metrics.keys.get(key);
    let tally = |i: u64| stats.as_ref().map(|s| s.in_window(i)).unwrap_or((0, 0));
    let (allowed, denied) = tally(index);
    // The previous window is complete, so summing it across nodes gives an exact total.
    let (prev_allowed, prev_denied) = tally(index.wrapping_sub(1));
    let redis = peek.map(|p| {
        json!({
            "current": p.current,
            "previous": p.previous,
            "estimate": estimate(p.previous, p.current, window, elapsed),
        })
    });
    json!({
        "key": key,
        "node": node.cfg.node_id,
        "limit": limit,
        "window_ms": window,
        "window_index": index,
        "window_start_ms": start,
        "now_ms": now,
        "elapsed_ms": elapsed,
        "clock": if redis.is_some() { "redis" } else { "local" },
        "blocked": blocked,
        "redis": redis,
        "local": local,
        "allowed_in_window": allowed,
        "denied_in_window": denied,
        "allowed_in_previous_window": prev_allowed,
        "denied_in_previous_window": prev_denied,
        "window_of_tallies": index,
    })
}

async fn counters_key(
    State(node): AppState,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let key = path_key(path)?;
    ok_json(key_view(&node, &key).await)
}

async fn counters_top(State(node): AppState) -> ApiResult {
    let now = if node.redis_available() {
        node.store
            .time_ms()
            .await
            .unwrap_or_else(|_| local_now_ms())
    } else {
        local_now_ms()
    };
    let keys = node.metrics.keys.top_recent(TOP_COUNTER_KEYS, now);
    let mut views = Vec::with_capacity(keys.len());
    for k in &keys {
        views.push(key_view(&node, k).await);
    }
    ok_json(json!({ "node": node.cfg.node_id, "keys": views }))
}

async fn reset(State(node): AppState, path: Result<Path<String>, PathRejection>) -> ApiResult {
    let key = path_key(path)?;
    let local_cleared = node.local.reset(&key);
    if !node.redis_available() {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: json!({
                "error": format!("redis unavailable: {}", node.redis_status()),
                "local_cleared": local_cleared,
            }),
        });
    }
    let deleted = node.store.reset(&key).await?;
    info!(key, deleted, "counters reset");
    ok_json(json!({
        "key": key,
        "node": node.cfg.node_id,
        "deleted": deleted,
        "local_cleared": local_cleared,
    }))
}

async fn get_limits(State(node): AppState) -> ApiResult {
    require_redis(&node)?;
    let raw = node.store.limits().await?;
    let mut default = node.cfg.default_limit();
    let mut limits = BTreeMap::new();
    for (field, json) in raw {
        let Ok(l) = serde_json::from_str::<Limit>(&json) else {
            continue;
        };
        if field == DEFAULT_FIELD {
            default = l;
        } else {
            limits.insert(field, l);
        }
    }
    ok_json(json!({ "default": default, "limits": limits }))
}

#[derive(Deserialize)]
struct LimitBody {
    #[serde(default)]
    limit: Option<Number>,
    #[serde(default)]
    window_ms: Option<Number>,
}

async fn put_limit(
    State(node): AppState,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let key = path_key(path)?;
    let bytes = body_bytes(body)?;
    let req: LimitBody = parse_json(&bytes)?;
    let limit = int_field("limit", req.limit.as_ref(), true, MAX_LIMIT)?
        .ok_or_else(|| ApiError::bad("missing field `limit`"))?;
    let window_ms = int_field("window_ms", req.window_ms.as_ref(), false, MAX_WINDOW_MS)?
        .ok_or_else(|| ApiError::bad("missing field `window_ms`"))?;
    require_redis(&node)?;
    let l = Limit { limit, window_ms };
    node.store.set_limit(&key, l).await?;
    info!(key, limit, window_ms, "limit stored");
    node.refresh_cache().await;
    ok_json(json!({ "key": key, "limit": limit, "window_ms": window_ms }))
}

async fn set_block(
    node: Arc<Node>,
    path: Result<Path<String>, PathRejection>,
    blocked: bool,
) -> ApiResult {
    let key = path_key(path)?;
    require_redis(&node)?;
    let changed = node.store.set_blocked(&key, blocked).await?;
    info!(key, blocked, "block state set");
    node.refresh_cache().await;
    ok_json(json!({ "key": key, "blocked": blocked, "changed": changed }))
}

async fn block(State(node): AppState, path: Result<Path<String>, PathRejection>) -> ApiResult {
    set_block(node, path, true).await
}

async fn unblock(State(node): AppState, path: Result<Path<String>, PathRejection>) -> ApiResult {
    set_block(node, path, false).await
}

async fn drain(State(node): AppState) -> ApiResult {
    node.set_draining(true);
    ok_json(json!({ "node": node.cfg.node_id, "mode": node.mode().as_str() }))
}

async fn undrain(State(node): AppState) -> ApiResult {
    node.set_draining(false);
    ok_json(json!({ "node": node.cfg.node_id, "mode": node.mode().as_str() }))
}

async fn healthz(State(node): AppState) -> Response {
    let available = node.redis_available();
    let status = if node.draining() {
        "draining"
    } else if available {
        "ok"
    } else {
        "degraded"
    };
    let body = json!({
        "node": node.cfg.node_id,
        "status": status,
        "redis": node.redis_status(),
        "mode": node.mode().as_str(),
        "policy": node.cfg.policy.as_str(),
        "chaos": node.cfg.chaos.then(|| node.chaos.get()),
    });
    let code = if available {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(node): AppState) -> ApiResult {
    node.refresh_mode();
    let text = node.metrics.render().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        )
    })?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn get_chaos(State(node): AppState) -> ApiResult {
    ok_json(node.chaos.get())
}

async fn set_chaos(State(node): AppState, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let bytes = body_bytes(body)?;
    let s: ChaosSettings = parse_json(&bytes)?;
    if s.redis_latency_ms > MAX_LATENCY_MS {
        return Err(ApiError::bad(format!(
            "redis_latency_ms must be <= {MAX_LATENCY_MS}"
        )));
    }
    node.chaos.set(s);
    info!(
        redis_latency_ms = s.redis_latency_ms,
        local_only = s.local_only,
        "chaos settings changed"
    );
    node.refresh_mode();
    node.heartbeat_now.notify_one();
    ok_json(node.chaos.get())
}
