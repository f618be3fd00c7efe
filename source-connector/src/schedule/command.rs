//! What a reload tells a lane's scheduler ([`Command`]) and what the lane
//! did ([`Applied`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::sites::{Changes, SiteSpec};

/// What a lane's scheduler is told by a reload ([`crate::lanes::Commander`]).
pub enum Command {
    /// Which of `wanted` (by index) this lane runs now, by url.
    Claim {
        /// The sites of the new configuration, for every lane.
        wanted: Arc<Vec<SiteSpec>>,
        /// Where the indices go.
        reply: oneshot::Sender<Vec<u32>>,
    },
    /// Run exactly the sites `mine` of `wanted` from now on: keep those that
    /// are unchanged, change, add and remove the others ([`super::diff::plan`]).
    Apply {
        /// The sites of the new configuration, for every lane.
        wanted: Arc<Vec<SiteSpec>>,
        /// This lane's share of them (indices).
        mine: Vec<u32>,
        /// Where the counts go.
        reply: oneshot::Sender<Applied>,
    },
    /// Which of the sites `changes` puts (by index) this lane runs now, by
    /// url, and how many sites it runs.
    ClaimChanges {
        /// What a reload of a file's changed lines changes, for every lane.
        changes: Arc<Changes>,
        /// Where the indices and the count go.
        reply: oneshot::Sender<(Vec<u32>, usize)>,
    },
    /// Puts the sites `mine` of `changes` (adds them, or changes the site of
    /// their url) and removes those of its removed urls (and, with
    /// `retain`, every url not retained); every other site
    /// runs on as it does.
    ApplyChanges {
        /// What changes, for every lane.
        changes: Arc<Changes>,
        /// This lane's share of its sites to put (indices).
        mine: Vec<u32>,
        /// Where the counts go.
        reply: oneshot::Sender<Applied>,
    },
}

/// What a lane did with an [`Command::Apply`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Sites it started.
    pub added: usize,
    /// Sites it stopped (their checks in flight still deliver).
    pub removed: usize,
    /// Sites whose new settings apply from their next tick.
    pub changed: usize,
    /// Sites kept as they ran.
    pub unchanged: usize,
    /// Sites it runs now.
    pub running: usize,
    /// Sites that could not be started: their url and why (an HTTP client
    /// for their settings could not be built).
    pub failed: Vec<(String, String)>,
    /// How long reading and checking the files took (set by the reload).
    pub read: Duration,
    /// How long the lanes took to apply it (set by the reload).
    pub apply: Duration,
    /// How the reload read its sites (set by the reload): `lines` (only
    /// `sites_file`'s changed lines), `survey` (every site checked, then
    /// applied a chunk at a time) or `whole` (every site in one list).
    pub how: &'static str,
}

impl Applied {
    /// Takes in the counts of a later step of one reload over every lane
    /// (its sites added, changed, removed and failed), whose `running` is
    /// the count now; `unchanged` is what runs and was neither added nor
    /// changed by any step.
    pub fn then(&mut self, step: Applied) {
        self.added += step.added;
        self.removed += step.removed;
        self.changed += step.changed;
        self.running = step.running;
        self.unchanged = self.running.saturating_sub(self.added + self.changed);
        self.failed.extend(step.failed);
    }

    /// Adds the counts of another lane.
    pub fn add(&mut self, other: Applied) {
        self.added += other.added;
        self.removed += other.removed;
        self.changed += other.changed;
        self.unchanged += other.unchanged;
        self.running += other.running;
        self.failed.extend(other.failed);
    }
}
