//! Reloading the configuration without a restart.
//!
//! A reload is asked for by SIGHUP (the binary forwards it), by
//! `POST /-/reload` on the telemetry address, or — with `reload_watch` —
//! when the configuration file or `sites_file` changes on disk (`watch`).
//! Requests go through a [`ReloadHandle`] to one [`Reloader`] task, which
//! runs them one at a time:
//!
//! 1. the file is read and checked exactly as `--check-config` does
//!    ([`crate::sites::reread`]: `${VAR}`, the environment overrides, every
//!    check, the sites resolved and sharded); when nothing but `sites_file`'s
//!    lines changed since the last load, only its new lines are resolved
//!    (each line is looked up in the last load's [`FileIndex`]); else every
//!    site is checked and only its url hash kept ([`crate::sites::survey`]);
//! 2. settings that only a restart can change (`fixed`) are compared with
//!    the running ones; any difference refuses the whole reload, naming each
//!    key;
//! 3. the new sites go to the check threads ([`crate::lanes::Commander`]),
//!    which apply the difference by url ([`crate::schedule::diff`]), or
//!    only the changes, found by url hash; a survey's sites are resolved
//!    again and put [`CHUNK`] at a time after the sites not kept are
//!    removed, so no second list of every site is held.
//!
//! A refused reload changes nothing: the previous configuration keeps
//! running; the problem is logged (file, line, key, as at start) and
//! `website_monitor_config_reload_success` drops to 0 until a reload
//! succeeds.
//!
//! Layout: `fixed` (the restart-only settings), `watch` (file fingerprints),
//! this file (the requests and the task).

mod fixed;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use connector_common::config::{ConfigError, Loaded};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use fixed::restart_only;
pub use watch::{Fingerprint, Settle, Watched, UNFINISHED_SETTLE};

use crate::config::SourceConfig;
use crate::discovery::{Catalog, Update};
use crate::lanes::{Commander, LanesGone};
use crate::metrics::{self, ReloadHandles};
use crate::schedule::Applied;
use crate::sites::{FileIndex, Interrupted, Reread, Survey, CHUNK};

/// What asked for a reload (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// `POST /-/reload`.
    Http,
    /// `reload_watch` saw a file change.
    Watch,
}

impl Trigger {
    /// How the log names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::Http => "POST /-/reload",
            Trigger::Watch => "file change",
        }
    }
}

/// Why a reload was refused (the previous configuration keeps running).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot be used, as `--check-config` would say.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Settings changed that only a restart can apply.
    #[error(transparent)]
    RestartOnly(#[from] RestartOnly),
    /// The check threads have stopped.
    #[error(transparent)]
    Lanes(#[from] LanesGone),
    /// The source is stopping or stopped; nothing reloads any more.
    #[error("the source is stopping; no reload")]
    Stopped,
    /// The file was written over while a reload applied it: the sites
    /// before where it stopped run with the new configuration, the rest as
    /// they ran.
    #[error("{source}")]
    Interrupted {
        /// Where and why it stopped.
        #[source]
        source: Interrupted,
        /// How many sites run now.
        running: usize,
    },
    /// Reading the file panicked (a bug).
    #[error("the reload failed unexpectedly: {0}")]
    Crashed(String),
}

/// A reload refused because it changes settings only a restart applies.
#[derive(Debug)]
pub struct RestartOnly {
    /// The configuration file.
    pub path: PathBuf,
    /// Each key that changed.
    pub keys: Vec<&'static str>,
}

impl std::fmt::Display for RestartOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| format!("`{k}`")).collect();
        write!(
            f,
            "{}: only a restart applies {}; the reload was refused and the previous \
             configuration keeps running (undo {} or restart)",
            self.path.display(),
            keys.join(", "),
            if keys.len() == 1 {
                "that change"
            } else {
                "those changes"
            }
        )
    }
}

impl std::error::Error for RestartOnly {}

/// One request, and where its outcome goes.
struct Request {
    trigger: Trigger,
    reply: Option<oneshot::Sender<Result<Applied, String>>>,
}

/// Asks the running source to reload its configuration; cheap to clone.
#[derive(Clone)]
pub struct ReloadHandle {
    requests: mpsc::Sender<Request>,
}

impl ReloadHandle {
    /// Reloads and waits for the outcome: the counts of what changed, or
    /// why the reload was refused (as logged).
    pub async fn reload(&self, trigger: Trigger) -> Result<Applied, String> {
        let (reply, outcome) = oneshot::channel();
        let request = Request {
            trigger,
            reply: Some(reply),
        };
        let stopped = || ReloadError::Stopped.to_string();
        self.requests.send(request).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    /// Asks for a reload without waiting; a request made while another
    /// waits is folded into it (that one reads the file after both).
    pub fn request(&self, trigger: Trigger) {
        let _ = self.requests.try_send(Request {
            trigger,
            reply: None,
        });
    }
}

/// Where requests wait until the [`Reloader`] runs.
pub struct Requests(mpsc::Receiver<Request>);

/// A handle and the requests it sends.
pub fn channel() -> (ReloadHandle, Requests) {
    // One waiting request is enough to fold any number of fire-and-forget
    // ones; replies wait for a free place.
    let (requests, rx) = mpsc::channel(1);
    (ReloadHandle { requests }, Requests(rx))
}

/// The task that applies reloads to a running source.
pub struct Reloader {
    /// The configuration running now.
    pub current: Loaded<SourceConfig>,
    /// The running check threads.
    pub lanes: Commander,
    /// How `${VAR}` and the overrides read the environment.
    pub env: fn(&str) -> Option<String>,
    /// The sites of every source, when some come from outside the
    /// configuration (`sites_topic`, `http_sd_url`).
    pub catalog: Option<Catalog>,
    /// What those sources send.
    pub updates: Option<mpsc::Receiver<Update>>,
    /// The index of `sites_file`'s lines as last loaded (none with sites
    /// from outside: their list is combined whole with the file's).
    pub index: Option<Arc<FileIndex>>,
}

/// The next update of the sources of sites; never, when there are none.
async fn next_update(updates: &mut Option<mpsc::Receiver<Update>>) -> Option<Update> {
    match updates {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Reloader {
    /// Applies the requests until `stop`; with `reload_watch`, also looks
    /// at the files that often.
    pub async fn run(mut self, mut requests: Requests, stop: CancellationToken) {
        let handles = ReloadHandles::register();
        let every = self.current.section.reload_watch;
        let mut watched = Watched::of(&self.current);
        let mut settle = Settle::default();
        let mut poll = tokio::time::interval(every.unwrap_or(Duration::from_secs(3600)));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (trigger, reply) = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                r = requests.0.recv() => match r {
                    Some(r) => (r.trigger, r.reply),
                    None => return,
                },
                u = next_update(&mut self.updates) => {
                    self.discovered(u).await;
                    continue;
                }
                _ = poll.tick(), if every.is_some() => {
                    if !settle.poll(&watched, std::time::Instant::now()) {
                        continue;
                    }
                    (Trigger::Watch, None)
                }
            };
            // Looked at before reading: a change while reading is seen next time.
            let before = Watched::of(&self.current);
            let outcome = self.reload(trigger, &handles).await;
            watched = match &outcome {
                Ok(_) => Watched::after_reload(before, &self.current),
                Err(_) => before,
            };
            if let Some(reply) = reply {
                let _ = reply.send(outcome.map_err(|e| e.to_string()));
            }
        }
    }

    /// Applies an update of a source of sites (`None`: the sources stopped).
    async fn discovered(&mut self, update: Option<Update>) {
        let (Some(update), Some(catalog)) = (update, self.catalog.as_mut()) else {
            self.updates = None;
            return;
        };
        let Update::Changes(origin, changes) = update else {
            return;
        };
        catalog.apply(origin, changes, &self.current);
        let sites = catalog.combined(&self.current.section);
        match self.lanes.apply(sites).await {
            Ok(applied) => {
                metrics::sites(applied.running);
                for (url, why) in &applied.failed {
                    tracing::error!(url = %url, "this site could not be started: {why}");
                }
                if applied.added + applied.removed + applied.changed > 0 {
                    tracing::info!(
                        source = origin.as_str(),
                        added = applied.added,
                        removed = applied.removed,
                        changed = applied.changed,
                        unchanged = applied.unchanged,
                        sites = applied.running,
                        "sites from outside applied"
                    );
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// One reload, logged and counted.
    async fn reload(
        &mut self,
        trigger: Trigger,
        handles: &ReloadHandles,
    ) -> Result<Applied, ReloadError> {
        tracing::info!(trigger = trigger.as_str(), "reloading the configuration");
        match self.attempt().await {
            Ok(applied) => {
                handles.success(applied.added, applied.removed, applied.changed);
                metrics::sites(applied.running);
                for (url, why) in &applied.failed {
                    tracing::error!(url = %url, "this site could not be started: {why}");
                }
                tracing::info!(
                    trigger = trigger.as_str(),
                    added = applied.added,
                    removed = applied.removed,
                    changed = applied.changed,
                    unchanged = applied.unchanged,
                    failed = applied.failed.len(),
                    sites = applied.running,
                    read_s = applied.read.as_secs_f64(),
                    apply_s = applied.apply.as_secs_f64(),
                    how = applied.how,
                    "configuration reloaded"
                );
                Ok(applied)
            }
            Err(e) => {
                handles.failure();
                for line in e.to_string().lines() {
                    tracing::error!(trigger = trigger.as_str(), "reload refused: {line}");
                }
                if let ReloadError::Interrupted { running, .. } = &e {
                    metrics::sites(*running);
                    tracing::warn!(
                        sites = running,
                        "running the sites applied so far with the new configuration and the \
                         others as before; reload again to apply the whole file"
                    );
                } else {
                    tracing::warn!("still running the previous configuration");
                }
                Err(e)
            }
        }
    }

    /// Reads, checks and applies the file; see the module documentation.
    async fn attempt(&mut self) -> Result<Applied, ReloadError> {
        let path = self.current.path.clone();
        let env = self.env;
        let started = std::time::Instant::now();
        // Sites from outside are combined whole with the file's: no index,
        // no chunks.
        let alone = self.catalog.is_none();
        let previous = self.index.clone().filter(|_| alone);
        let (loaded, reread) = tokio::task::spawn_blocking(move || {
            crate::sites::reread(&path, &env, previous.as_deref(), alone)
        })
        .await
        .map_err(|e| ReloadError::Crashed(e.to_string()))??;
        let keys = restart_only(&self.current, &loaded);
        if !keys.is_empty() {
            let path = loaded.path;
            return Err(RestartOnly { path, keys }.into());
        }
        let read = started.elapsed();
        let how = match &reread {
            Reread::Changes { .. } => "lines",
            Reread::Survey(_) => "survey",
            Reread::Full { .. } => "whole",
        };
        let (mut applied, index) = match reread {
            Reread::Changes { changes, index } => {
                (self.lanes.apply_changes(changes).await?, Some(index))
            }
            Reread::Survey(survey) => {
                // Applied in part, what runs is neither file: the next
                // reload must not count changes from the old one.
                self.index = None;
                let (applied, index) = self.apply_survey(survey, &loaded).await?;
                (applied, Some(index))
            }
            Reread::Full { sites, index } => {
                let sites = match self.catalog.as_mut() {
                    Some(catalog) => {
                        catalog.reload(sites, &loaded);
                        catalog.combined(&loaded.section)
                    }
                    None => sites,
                };
                (self.lanes.apply(sites).await?, index)
            }
        };
        (applied.read, applied.apply) = (read, started.elapsed() - read);
        applied.how = how;
        self.index = index.filter(|_| alone).map(Arc::new);
        self.current = loaded;
        Ok(applied)
    }

    /// Applies a surveyed configuration: its sites are resolved again on a
    /// blocking thread and handed to the lanes [`CHUNK`] at a time (two
    /// chunks at most wait between them); the counts, and the index for
    /// the next reload.
    async fn apply_survey(
        &self,
        mut survey: Survey,
        loaded: &Loaded<SourceConfig>,
    ) -> Result<(Applied, FileIndex), ReloadError> {
        let keep = std::mem::take(&mut survey.keep);
        let (tx, rx) = mpsc::channel(1);
        let loaded = loaded.clone();
        let walking = tokio::task::spawn_blocking(move || {
            let mut put = |chunk| tx.blocking_send(chunk).is_ok();
            let walked = survey.put_in_chunks(&loaded, CHUNK, &mut put);
            walked.map(|()| survey.index)
        });
        let applied = self.lanes.apply_in_chunks(keep, rx).await;
        let walked = walking
            .await
            .map_err(|e| ReloadError::Crashed(e.to_string()))?;
        let applied = applied?;
        match walked {
            Ok(index) => Ok((applied, index)),
            Err(source) => Err(ReloadError::Interrupted {
                source,
                running: applied.running,
            }),
        }
    }
}
