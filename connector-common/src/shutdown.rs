//! Turning SIGTERM / SIGINT into a [`CancellationToken`].
//!
//! Libraries never install signal handlers themselves, and never exit the
//! process: a binary calls [`on_signal`], passes the graceful token to `run`
//! and exits itself when the forced one fires; tests cancel a token of their own.

use tokio_util::sync::CancellationToken;

/// The tokens the signals fire.
#[derive(Debug, Clone)]
pub struct Signals {
    /// Cancelled at the first SIGTERM or SIGINT: stop after the work in hand.
    pub graceful: CancellationToken,
    /// Cancelled at a second one while shutting down: the operator does not
    /// want to wait; the binary exits at once (with
    /// [`crate::cli::EXIT_FORCED`]).
    pub forced: CancellationToken,
}

/// Starts listening for SIGTERM / SIGINT; returns the tokens they fire.
pub fn on_signal() -> Signals {
    let signals = Signals {
        graceful: CancellationToken::new(),
        forced: CancellationToken::new(),
    };
    let fire = signals.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        // Cancel first: nothing after the signal may keep shutdown from starting.
        fire.graceful.cancel();
        tracing::info!(
            "shutdown requested: finishing in-flight work (signal again to exit at once)"
        );
        wait_for_signal().await;
        fire.forced.cancel();
        tracing::warn!("second signal: exiting without finishing");
    });
    signals
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
