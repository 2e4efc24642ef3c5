//! Router integration tests: a real router on 127.0.0.1:0 in front of real
//! fake dynos that misbehave on purpose.

mod support;

mod hcodes;
mod headers;
mod proxying;
mod queueing;
mod shutdown;
mod smuggling;
mod tls;
mod websocket;

use std::time::Duration;

/// Polls `cond` until it holds, for up to `SWITCHYARD_TEST_PATIENCE_MS`
/// (default 10 s); panics otherwise.
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    let patience = std::env::var("SWITCHYARD_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(patience);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {patience} ms"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
