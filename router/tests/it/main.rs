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

/// How long `eventually` waits: `SWITCHYARD_TEST_PATIENCE_MS` (default 10 s).
fn patience() -> Duration {
    let ms = std::env::var("SWITCHYARD_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    Duration::from_millis(ms)
}

/// Polls `cond` until it holds, for up to the test patience; panics otherwise.
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    eventually_some(|| std::future::ready(cond().then_some(()))).await
}

/// Runs `probe` until it yields `Some`, for up to the test patience, and
/// returns that value; panics otherwise.
pub async fn eventually_some<T, F>(mut probe: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let patience = patience();
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
