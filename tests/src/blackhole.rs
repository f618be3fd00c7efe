//! A TCP proxy that can turn into a black hole: a half-open peer on demand.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP proxy on 127.0.0.1 to a local port (PostgreSQL's, say) that can
/// turn into a black hole: after [`BlackHole::freeze`], bytes on open
/// connections are no longer passed on and new connections are accepted but
/// never answered — a half-open peer, as after a network partition or a dead
/// NAT entry.
pub struct BlackHole {
    /// The port it listens on.
    pub port: u16,
    frozen: Arc<AtomicBool>,
    /// Connections numbered up to this are frozen for good.
    cut: Arc<AtomicU64>,
    /// The number of the last connection accepted.
    last: Arc<AtomicU64>,
}

impl BlackHole {
    /// Starts passing connections on to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicU64::new(0));
        let last = Arc::new(AtomicU64::new(0));
        let (f, c, l) = (frozen.clone(), cut.clone(), last.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let id = l.fetch_add(1, Ordering::SeqCst) + 1;
                if f.load(Ordering::SeqCst) {
                    held.push(client);
                    continue;
                }
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let me = id;
                for (r, w) in [
                    (
                        Box::new(cr) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(sr), Box::new(cw)),
                ] {
                    tokio::spawn(pass_on(r, w, c.clone(), me));
                }
            }
        });
        Self {
            port,
            frozen,
            cut,
            last,
        }
    }

    /// From now on: open connections pass nothing on, new ones are never answered.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
        self.cut
            .store(self.last.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// New connections are passed on again (the frozen ones stay frozen).
    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }
}

/// Copies `r` to `w` until either closes, or forever nothing once connection
/// `me` is cut (both halves kept open).
async fn pass_on(
    mut r: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    mut w: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    cut: Arc<AtomicU64>,
    me: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = w.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) >= me {
            // Frozen: keep both halves open, pass nothing on.
            let _keep = (r, w);
            std::future::pending::<()>().await;
            return;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
