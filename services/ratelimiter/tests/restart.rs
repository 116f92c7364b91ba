//! A node killed and started again comes back at the address its peers and the operator
//! know, even when something held that port for a while (the harness waits for it).

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarts_on_its_own_port_once_the_port_is_free() {
    let redis = Redis::start();
    let mut node = Node::start(&redis.url(), "again-1", &[], true).await;
    let http = client();
    let (port, url) = (node.port(), node.url.clone());
    put(
        &http,
        &url,
        "/v1/limits/again",
        json!({"limit": 5, "window_ms": 60000}),
    )
    .await;
    assert_eq!(check(&http, &url, "again").await.0, 200);

    node.kill();
    // Someone else takes the port while the node is down, and lets go a little later.
    let squatter = TcpListener::bind(("127.0.0.1", port)).expect("take the node's port");
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        drop(squatter);
    });
    let node = node.restart().await;
    release.join().expect("squatter thread");
    assert_eq!(node.port(), port);
    assert_eq!(node.url, url);
    // The same node, with the shared state in Redis intact: one of 5 already used.
    let (s, v) = check(&http, &url, "again").await;
    assert_eq!(
        (s, v["remaining"].clone(), v["node"].clone()),
        (200, json!(3), json!("again-1"))
    );
    wait_until(
        Duration::from_secs(10),
        "the registry shows the node's address",
        || async {
            let (_, v) = get(&http, &url, "/v1/nodes").await;
            v["nodes"].as_array().is_some_and(|ns| {
                ns.iter()
                    .any(|n| n["id"] == "again-1" && n["addr"] == format!("127.0.0.1:{port}"))
            })
        },
    )
    .await;
}
