//! A distributed rate limiter: stateless nodes deciding with one atomic sliding-window Lua
//! script on a shared Redis, with a local fallback, a management API and Prometheus metrics.
//! See README.md for the API, the Redis key schema and the failure modes.

pub mod api;
pub mod chaos;
pub mod config;
pub mod fallback;
pub mod metrics;
pub mod node;
pub mod registry;
pub mod script;
pub mod store;

/// An HTTP client builder for the load generator and tests.
///
/// In a workspace build reqwest's features unify with the host's, which carries rustls
/// without a default crypto provider; building a client then panics unless one is
/// installed. Installing ring here keeps `loadgen` working in either build.
pub fn http_client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::Config;
use crate::node::Node;

/// Serve a node until SIGINT/SIGTERM, then deregister it.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr().context("reading bound address")?;
    let node = Arc::new(Node::new(cfg, addr.to_string())?);
    // First probe before serving, so a node with Redis available starts in normal mode.
    node.probe().await;
    node.spawn_background();
    info!(
        node = node.cfg.node_id,
        %addr,
        redis = node.cfg.redis,
        policy = node.cfg.policy.as_str(),
        chaos = node.cfg.chaos,
        "ratelimiter node listening"
    );
    // Machine-readable line for supervisors and tests that listen on port 0.
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}").context("writing to stdout")?;
        out.flush().context("flushing stdout")?;
    }
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, api::router(node.clone()))
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .into_future(),
    );
    shutdown_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(());
    // Keep-alive clients can hold a graceful shutdown open; do not wait for them forever.
    match tokio::time::timeout(Duration::from_secs(3), server).await {
        Ok(Ok(Ok(()))) | Err(_) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "server error during shutdown"),
        Ok(Err(e)) => warn!(error = %e, "server task failed"),
    }
    if let Err(e) = node.store.delete_node(&node.cfg.node_id).await {
        warn!(error = %e, "could not remove registry entry; it expires by TTL");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
