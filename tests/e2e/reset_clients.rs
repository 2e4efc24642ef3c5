//! The control-plane wedge: clients that reset the connection right after
//! sending `POST /apps` must not leave the control plane behind its store.
//! Before the fix, one such client dropped a change between its commit and
//! its publication, and every later write answered 503 "revision conflict"
//! until the process restarted.

use std::net::SocketAddr;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::support::{api, serve, TempDir, KEY};

/// Sends a complete `POST /apps` and resets the connection (SO_LINGER 0)
/// without reading the answer.
async fn post_and_reset(addr: SocketAddr, name: String) {
    let body = json!({ "name": name }).to_string();
    let req = format!(
        "POST /apps HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let _ = s.write_all(req.as_bytes()).await;
    let _ = s.set_zero_linger();
}

#[test]
fn writes_succeed_after_300_clients_reset_mid_request() {
    let dir = TempDir::new("reset-clients");
    let sy = serve(&dir.0, None, Some(KEY));
    let addr = sy.addr("api");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let clients: Vec<_> = (0..300)
            .map(|i| tokio::spawn(post_and_reset(addr, format!("reset-{i}"))))
            .collect();
        for c in clients {
            c.await.expect("client");
        }
    });
    let (status, body) = api(
        addr,
        KEY,
        "POST",
        "/apps",
        Some(json!({ "name": "after-resets" })),
    )
    .expect("create");
    assert_eq!(status, 201, "{body}");
    let (status, body) = api(
        addr,
        KEY,
        "POST",
        "/apps",
        Some(json!({ "name": "and-another" })),
    )
    .expect("create");
    assert_eq!(status, 201, "{body}");
    let (status, body) = api(addr, KEY, "GET", "/apps/after-resets", None).expect("info");
    assert_eq!(status, 200, "{body}");
}
