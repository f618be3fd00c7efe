//! Sites from outside the configuration: a compacted Kafka topic of site
//! definitions (`sites_topic`, split between instances by a consumer
//! group with `sites_group`) and Prometheus http_sd (`http_sd_url`).
//!
//! Each source runs as a task that sends [`Update`]s; the reloader
//! ([`crate::reload`]) keeps them in a [`Catalog`], resolves them with the
//! `[source]` defaults and applies the combined list to the check threads
//! by the same difference a reload applies. A definition that cannot be
//! used is logged with its url and counted
//! (`website_monitor_discovered_site_errors_total`) when it is new or its
//! problem changed, and shown while it lasts
//! (`website_monitor_discovered_sites_refused`); it never stops the source.
//!
//! At start, [`Discovery::initial`] waits until the topic was read to its
//! end (and http_sd fetched once), so the first list is complete and the
//! source is ready only then.
//!
//! Layout: `catalog` (the sites of every source, combined), `topic` (the
//! Kafka follower), `topic_client` (its consumer settings and the look at
//! whether the topic can still be read), `http_sd` (the poller), this file
//! (what they send, and starting them).

mod catalog;
mod http_sd;
mod topic;
mod topic_client;

#[cfg(test)]
mod tests;

use connector_common::config::Loaded;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use catalog::Catalog;
pub use http_sd::{parse_targets, HttpSdError};
pub use topic::TopicError;

use crate::config::{SiteConfig, SourceConfig};
use crate::metrics;

/// A source of sites from outside the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `sites_topic`.
    Topic,
    /// `http_sd_url`.
    HttpSd,
}

impl Origin {
    /// The `source` label of its metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Topic => "topic",
            Origin::HttpSd => "http_sd",
        }
    }

    /// How the log names it.
    fn name(self) -> &'static str {
        match self {
            Origin::Topic => "sites_topic",
            Origin::HttpSd => "http_sd_url",
        }
    }

    /// What an operator does about a definition that cannot be used.
    fn fix(self) -> &'static str {
        match self {
            Origin::Topic => "write a corrected record with this key (or a tombstone to remove it); see docs/discovery.md",
            Origin::HttpSd => "correct this target in the list http_sd_url serves; see docs/discovery.md",
        }
    }
}

/// One change of a source's sites, by url (the shown form).
#[derive(Debug)]
pub enum Change {
    /// The url is defined so.
    Put(Box<str>, Box<SiteConfig>),
    /// The url is no longer defined.
    Remove(Box<str>),
    /// The url's definition cannot be used: not checked (logged and
    /// counted by the catalog when it is new or changed).
    Refused(Box<str>, Box<Refusal>),
}

impl Change {
    /// `url`'s definition refused: the `key` of the problem and what is wrong.
    pub(crate) fn refused(url: &str, key: &str, message: String) -> Self {
        Change::Refused(
            url.into(),
            Box::new(Refusal {
                key: key.to_owned(),
                message,
            }),
        )
    }
}

/// Why a definition from outside is not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The key of the problem (`interval`, `key`, `targets`...).
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// What a source of sites tells the reloader.
#[derive(Debug)]
pub enum Update {
    /// Changes of `origin`'s sites: for the topic, each url's change; for
    /// http_sd, the whole new list (every `Put`).
    Changes(Origin, Vec<Change>),
    /// `origin` has its first complete list (the topic read to its end,
    /// http_sd fetched once, well or not).
    Ready(Origin),
}

/// Why a source of sites could not be started.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The sites topic.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The http_sd client.
    #[error(transparent)]
    HttpSd(#[from] HttpSdError),
}

/// The running sources of sites and what they send.
pub struct Discovery {
    /// Their updates.
    pub updates: mpsc::Receiver<Update>,
    /// The sources not yet [`Update::Ready`].
    waiting: Vec<Origin>,
}

impl Discovery {
    /// Starts the sources `config` names (`None` when it names none); they
    /// run until `stop`.
    pub fn start(
        config: &Loaded<SourceConfig>,
        stop: &CancellationToken,
    ) -> Result<Option<Self>, DiscoveryError> {
        let source = &config.section;
        if source.sites_topic.is_none() && source.http_sd_url.is_none() {
            return Ok(None);
        }
        let (tx, updates) = mpsc::channel(64);
        let mut waiting = Vec::new();
        // Shown from the start, so `increase()` sees the first error.
        for origin in [Origin::Topic, Origin::HttpSd] {
            metrics::discovered_site_errors(origin.as_str(), 0);
            metrics::discovered_sites_refused(origin.as_str(), 0);
        }
        if let Some(topic) = &source.sites_topic {
            let follower = topic::Follower::new(&config.kafka, source, topic, tx.clone())?;
            tokio::spawn(follower.run(stop.clone()));
            waiting.push(Origin::Topic);
        }
        if let Some(url) = &source.http_sd_url {
            let poller = http_sd::Poller::new(url.clone(), source.http_sd_refresh, tx)?;
            tokio::spawn(poller.run(stop.clone()));
            waiting.push(Origin::HttpSd);
        }
        Ok(Some(Discovery { updates, waiting }))
    }

    /// Takes updates into `catalog` until every source has its first list
    /// (or `stop`): what the source starts with.
    pub async fn initial(
        &mut self,
        catalog: &mut Catalog,
        config: &Loaded<SourceConfig>,
        stop: &CancellationToken,
    ) {
        while !self.waiting.is_empty() {
            let update = tokio::select! {
                () = stop.cancelled() => return,
                u = self.updates.recv() => match u {
                    Some(u) => u,
                    None => return,
                },
            };
            match update {
                Update::Changes(origin, changes) => catalog.apply(origin, changes, config),
                Update::Ready(origin) => self.waiting.retain(|o| *o != origin),
            }
        }
    }
}
