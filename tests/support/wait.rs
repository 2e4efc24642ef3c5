//! Waiting on something real in a test: one copy for every test binary in
//! the workspace, included with `#[path]` (the crates share no test crate).
//!
//! A test that waits on another task, process or socket polls a condition
//! with these helpers instead of sleeping a guessed time. How long they
//! wait before failing is `SWITCHYARD_TEST_PATIENCE_MS` (default 30 s):
//! raise it on a slow machine, never the polling interval. On paused tokio
//! time the async helpers' sleeps advance the clock, so they cost nothing.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

/// How long a condition may take before the test fails.
pub fn patience() -> Duration {
    std::env::var("SWITCHYARD_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(30))
}

/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(10);

/// Polls `check` until it holds; panics naming `what` after [`patience`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    eventually_some(what, || std::future::ready(check().then_some(()))).await
}

/// Runs `probe` until it yields `Some` and returns that value; panics
/// naming `what` after [`patience`].
pub async fn eventually_some<T, F>(what: &str, mut probe: impl FnMut() -> F) -> T
where
    F: Future<Output = Option<T>>,
{
    let patience = patience();
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {patience:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] with a check that has to await (an HTTP call, a lock).
pub async fn eventually_async<F>(what: &str, mut check: impl FnMut() -> F)
where
    F: Future<Output = bool>,
{
    eventually_some(what, || {
        let checked = check();
        async move { checked.await.then_some(()) }
    })
    .await
}

/// [`eventually`] for tests without a runtime (the end-to-end tests drive
/// real processes from plain threads).
pub fn eventually_blocking(what: &str, mut check: impl FnMut() -> bool) {
    let patience = patience();
    let deadline = std::time::Instant::now() + patience;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {patience:?} waiting for: {what}"
        );
        std::thread::sleep(POLL);
    }
}
