//! The `--stdout` output: JSON lines written by a thread of their own.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connector_common::telemetry::Health;
use tokio::sync::mpsc;

use super::counts::{Counts, DropReason};

/// How long the stdout writer waits for more records before a write.
const STDOUT_LINGER: Duration = Duration::from_millis(2);

/// Writes records as JSON lines to stdout (`--stdout`).
///
/// A dedicated thread owns a locked, buffered stdout and writes whatever the
/// bounded channel holds; once the channel is empty it waits
/// a moment (2 ms) for more and then flushes: no blocking-pool hop and no
/// system call per record.
pub struct StdoutPublisher {
    tx: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    counts: Arc<Counts>,
}

impl StdoutPublisher {
    /// Starts the writer thread.
    pub fn new(health: &Health) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
        let counts = Arc::new(Counts::new());
        let c = Arc::clone(&counts);
        let writer = std::thread::Builder::new()
            .name("stdout-writer".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
                let write = |out: &mut std::io::BufWriter<_>, line: Vec<u8>| match out
                    .write_all(&line)
                    .and_then(|()| out.write_all(b"\n"))
                {
                    Ok(()) => c.delivered(),
                    Err(e) => {
                        c.failed(DropReason::Error);
                        tracing::warn!(error = %e, "cannot write to stdout");
                    }
                };
                let mut dirty = false;
                loop {
                    match rx.try_recv() {
                        Ok(line) => {
                            write(&mut out, line);
                            dirty = true;
                        }
                        Err(mpsc::error::TryRecvError::Empty) if dirty => {
                            // Let a few more records come before the write
                            // system call; a record waits at most this long.
                            std::thread::sleep(STDOUT_LINGER);
                            if rx.is_empty() {
                                let _ = out.flush();
                                dirty = false;
                            }
                        }
                        Err(mpsc::error::TryRecvError::Empty) => match rx.blocking_recv() {
                            Some(line) => {
                                write(&mut out, line);
                                dirty = true;
                            }
                            None => break,
                        },
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                    }
                }
                let _ = out.flush();
            })
            .expect("cannot start the stdout writer thread");
        health.set_ready();
        StdoutPublisher {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            counts,
        }
    }

    /// Hands one line to the writer thread (waits while its channel is full).
    pub async fn send(&self, payload: Vec<u8>) {
        let tx = self.tx.lock().expect("stdout lock").clone();
        let sent = match tx {
            Some(tx) => tx.send(payload).await.is_ok(),
            None => false,
        };
        if !sent {
            self.counts.failed(DropReason::Error);
        }
    }

    /// Closes the channel and waits until the writer has written and flushed
    /// every line.
    pub async fn finish(&self) {
        drop(self.tx.lock().expect("stdout lock").take());
        let writer = self.writer.lock().expect("stdout lock").take();
        if let Some(w) = writer {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
    }

    /// Delivered (written) and failed records so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }
}
