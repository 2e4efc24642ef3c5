//! One shutdown signal for every server: SIGTERM or SIGINT cancels a token
//! whose `cancelled()` future each `serve` function receives.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT. The SIGTERM handler is
/// registered before this returns, so a supervisor's early SIGTERM is a
/// graceful stop, not the default kill.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::spawn(async move {
        #[cfg(unix)]
        match term {
            Some(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}
