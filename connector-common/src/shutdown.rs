//! Turning SIGTERM / SIGINT into a [`CancellationToken`].
//!
//! Libraries never install signal handlers themselves: a binary calls
//! [`on_signal`] and passes the token to `run`, tests cancel a token of their own.

use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled at the first SIGTERM or SIGINT.
///
/// A second signal while shutting down exits the process at once with code 130,
/// for an operator who does not want to wait for in-flight work.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        // Cancel first: nothing after the signal may keep shutdown from starting.
        fire.cancel();
        tracing::info!(
            "shutdown requested: finishing in-flight work (signal again to exit at once)"
        );
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without finishing");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
