//! The sites every source gave, and the one list the check threads run:
//! the configuration's (`[[source.sites]]`, `sites_file`) first, then the
//! sites topic's, then http_sd's; a url given by two sources runs with the
//! definition of the first of them.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use connector_common::config::{Invalid, Loaded};

use super::{Change, Origin, Refusal};
use crate::config::{validate_site, OutsideSetting, SiteConfig, SourceConfig};
use crate::hash::shard_of;
use crate::metrics;
use crate::sites::{Resolver, SiteSpec};

/// One site from outside: as declared, and resolved with the `[source]`
/// defaults (`None` when a setting could not be used; it does not run).
struct Entry {
    site: SiteConfig,
    spec: Option<SiteSpec>,
}

/// The sites of each source, by url (the shown form, as a record has it).
pub struct Catalog {
    /// The configuration's sites, resolved and sharded.
    file: Vec<SiteSpec>,
    /// The sites topic's sites.
    topic: HashMap<Box<str>, Entry>,
    /// The http_sd sites, in the order the list gave them.
    http_sd: Vec<(Box<str>, Entry)>,
    /// The definitions refused now, by source (topic, http_sd) and url.
    refused: [HashMap<Box<str>, Refusal>; 2],
    /// How many urls of the outside sources the configuration shadowed at
    /// the last [`Catalog::combined`] (logged when it changes).
    shadowed: usize,
}

impl Catalog {
    /// A catalog with the configuration's sites and nothing from outside yet.
    pub fn new(file: Vec<SiteSpec>) -> Self {
        Catalog {
            file,
            topic: HashMap::new(),
            http_sd: Vec::new(),
            refused: [HashMap::new(), HashMap::new()],
            shadowed: 0,
        }
    }

    /// Replaces the configuration's sites (after a reload) and resolves the
    /// outside sites again with the reloaded defaults (a refusal is logged
    /// again only when it is new or changed).
    pub fn reload(&mut self, file: Vec<SiteSpec>, config: &Loaded<SourceConfig>) {
        self.file = file;
        let mut resolver = Resolving::new(config);
        let [topic_refused, sd_refused] = &mut self.refused;
        for (url, e) in self.topic.iter_mut() {
            let result = resolver.site(&e.site);
            e.spec = note(Origin::Topic, topic_refused, url, result);
        }
        for (url, e) in &mut self.http_sd {
            let result = resolver.site(&e.site);
            e.spec = note(Origin::HttpSd, sd_refused, url, result);
        }
        self.show_refused();
    }

    /// Applies `changes` of `origin`: the topic's, one url at a time; http_sd's,
    /// a whole new list.
    pub fn apply(&mut self, origin: Origin, changes: Vec<Change>, config: &Loaded<SourceConfig>) {
        let mut resolver = Resolving::new(config);
        match origin {
            Origin::Topic => {
                let refused = &mut self.refused[0];
                for change in changes {
                    match change {
                        Change::Put(url, site) => {
                            let spec = note(origin, refused, &url, resolver.site(&site));
                            self.topic.insert(url, Entry { site: *site, spec });
                        }
                        Change::Remove(url) => {
                            self.topic.remove(&url);
                            refused.remove(&url);
                        }
                        Change::Refused(url, why) => {
                            self.topic.remove(&url);
                            note(origin, refused, &url, Err(*why));
                        }
                    }
                }
            }
            Origin::HttpSd => {
                // A new list: what it refuses now replaces what the last refused.
                let mut last = std::mem::take(&mut self.refused[1]);
                let mut now = HashMap::new();
                let mut sites = Vec::new();
                for change in changes {
                    match change {
                        Change::Put(url, site) => {
                            let result = resolver.site(&site);
                            if let Err(why) = &result {
                                if last.get(&url) != Some(why) {
                                    log_refused(origin, &url, why);
                                }
                            }
                            let spec = result.map_err(|why| now.insert(url.clone(), why)).ok();
                            sites.push((url, Entry { site: *site, spec }));
                        }
                        Change::Refused(url, why) => {
                            if last.remove(&url).as_ref() != Some(&*why) {
                                log_refused(origin, &url, &why);
                            }
                            now.insert(url, *why);
                        }
                        Change::Remove(_) => {}
                    }
                }
                self.http_sd = sites;
                self.refused[1] = now;
            }
        }
        self.show_refused();
    }

    /// Sets the `discovered_sites_refused` gauges.
    fn show_refused(&self) {
        for (origin, refused) in [Origin::Topic, Origin::HttpSd].iter().zip(&self.refused) {
            metrics::discovered_sites_refused(origin.as_str(), refused.len());
        }
    }

    /// Every site to run: the configuration's, then the topic's (sharded
    /// with `shard` unless `sites_group` splits them), then http_sd's
    /// (sharded with `shard`), each url once; sets the `discovered_sites`
    /// gauges.
    pub fn combined(&mut self, config: &SourceConfig) -> Vec<SiteSpec> {
        let in_shard = |url: &str| {
            config
                .shard
                .is_none_or(|s| shard_of(url, s.count) == s.index)
        };
        let group = config.sites_group.is_some();
        let mut seen: HashSet<&str> = self.file.iter().map(|s| s.url.as_str()).collect();
        let mut out: Vec<SiteSpec> = self.file.clone();
        let (mut topic_n, mut sd_n, mut shadowed) = (0, 0, 0);
        let mut topic: Vec<&SiteSpec> = self
            .topic
            .values()
            .filter_map(|e| e.spec.as_ref())
            .filter(|s| group || in_shard(s.url.as_str()))
            .collect();
        // Stable order: the lanes deal new sites in the order given.
        topic.sort_unstable_by(|a, b| a.url.as_str().cmp(b.url.as_str()));
        let sd = self
            .http_sd
            .iter()
            .filter_map(|(_, e)| e.spec.as_ref())
            .filter(|s| in_shard(s.url.as_str()));
        for (from_topic, spec) in topic
            .into_iter()
            .map(|s| (true, s))
            .chain(sd.map(|s| (false, s)))
        {
            if from_topic {
                topic_n += 1;
            } else {
                sd_n += 1;
            }
            if seen.insert(spec.url.as_str()) {
                out.push(spec.clone());
            } else {
                shadowed += 1;
            }
        }
        metrics::discovered_sites(Origin::Topic.as_str(), topic_n);
        metrics::discovered_sites(Origin::HttpSd.as_str(), sd_n);
        if shadowed != self.shadowed && shadowed > 0 {
            tracing::warn!(
                shadowed,
                "some urls are given by more than one source of sites; each runs with the definition of the first: the configuration, then sites_topic, then http_sd"
            );
        }
        self.shadowed = shadowed;
        out
    }
}

/// Resolves outside sites with the `[source]` defaults, logging and
/// counting those that cannot be used.
struct Resolving<'a> {
    config: &'a SourceConfig,
    resolver: Resolver<'a>,
}

impl<'a> Resolving<'a> {
    fn new(config: &'a Loaded<SourceConfig>) -> Self {
        let dir = config.path.parent().unwrap_or(Path::new(""));
        Resolving {
            config: &config.section,
            resolver: Resolver::new(&config.section, dir),
        }
    }

    /// The site resolved, or why it cannot be used.
    fn site(&mut self, site: &SiteConfig) -> Result<SiteSpec, Refusal> {
        let mut problems: Vec<Invalid> = Vec::new();
        if let Some(s) = OutsideSetting::set_by(site)
            .into_iter()
            .find(|s| !self.config.outside_settings.contains(s))
        {
            let name = s.as_str();
            problems.push(Invalid::new(
                if name == "url_credentials" { "url" } else { name },
                format!(
                    "`{name}` may not be set from outside the configuration unless [source] outside_settings lists \"{name}\" (it changes what the probe sends, trusts or reads); remove it from the definition, or add it to outside_settings"
                ),
            ));
        }
        validate_site(site, self.config, "", &mut problems);
        let problem = match problems.into_iter().next() {
            Some(p) => p,
            None => match self.resolver.site(site) {
                Ok(spec) => return Ok(spec),
                Err(p) => p,
            },
        };
        Err(Refusal {
            key: problem.key,
            message: problem.message,
        })
    }
}

/// Keeps `url`'s refusal (of `origin`) in `refused`, logging and counting
/// it when it is new or changed, or forgets it when `result` is a site.
fn note(
    origin: Origin,
    refused: &mut HashMap<Box<str>, Refusal>,
    url: &str,
    result: Result<SiteSpec, Refusal>,
) -> Option<SiteSpec> {
    match result {
        Ok(spec) => {
            refused.remove(url);
            Some(spec)
        }
        Err(why) => {
            if refused.get(url) != Some(&why) {
                log_refused(origin, url, &why);
                refused.insert(url.into(), why);
            }
            None
        }
    }
}

/// Logs and counts a refusal.
fn log_refused(origin: Origin, url: &str, why: &Refusal) {
    refused(origin, url, &why.key, &why.message);
}

/// Logs and counts a site definition of `origin` that cannot be used.
pub fn refused(origin: Origin, url: &str, key: &str, message: &str) {
    metrics::discovered_site_errors(origin.as_str(), 1);
    tracing::error!(
        source = origin.as_str(),
        site = url,
        key,
        "a site definition from {} cannot be used and is not checked: {message}; {}",
        origin.name(),
        origin.fix()
    );
}
