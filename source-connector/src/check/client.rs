//! The HTTP clients of the checks: one `reqwest::Client` per distinct
//! [`ClientKey`], built once at start, never per check.

use std::collections::HashMap;

use reqwest::Client;

use super::error::SetupError;
use super::{phases, tls};
use crate::sites::{ClientKey, SiteSpec};

/// The `User-Agent` of checks unless a site sets its own.
pub const USER_AGENT: &str = concat!("website-monitor/", env!("CARGO_PKG_VERSION"));

/// Builds the client for sites with these settings, on the process's
/// [`tls::TlsBase`].
pub fn build_client(key: &ClientKey, base: &tls::TlsBase) -> Result<Client, SetupError> {
    let tls = base.client_config(key.tls_ca.as_ref(), key.tls_verify)?;
    let mut builder = Client::builder()
        .tls_backend_preconfigured(tls)
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(phases::TimingResolver)
        .connector_layer(phases::TimingLayer)
        .user_agent(USER_AGENT);
    if !key.keep_alive {
        // Say so: the server closes after its response, as it would for
        // ab's HTTP/1.0, instead of keeping an idle connection until we drop
        // it (nginx then spent twice the CPU per check, `make bench`).
        let mut close = reqwest::header::HeaderMap::new();
        close.insert(
            reqwest::header::CONNECTION,
            reqwest::header::HeaderValue::from_static("close"),
        );
        builder = builder.pool_max_idle_per_host(0).default_headers(close);
    }
    builder.build().map_err(SetupError::Client)
}

/// Builds every distinct client `sites` need, once.
pub fn build_clients(
    sites: &[SiteSpec],
    base: &tls::TlsBase,
) -> Result<HashMap<ClientKey, Client>, SetupError> {
    let mut clients = HashMap::new();
    for site in sites {
        if !clients.contains_key(&site.client) {
            clients.insert(site.client.clone(), build_client(&site.client, base)?);
        }
    }
    Ok(clients)
}

/// A lane's clients, one per distinct [`ClientKey`]: those its sites were
/// started with, and any a reload's new sites need, built on first use.
pub struct Clients {
    built: HashMap<ClientKey, Client>,
    base: tls::TlsBase,
}

impl Clients {
    /// The clients `sites` need, built on `base`.
    pub fn for_sites(sites: &[SiteSpec], base: &tls::TlsBase) -> Result<Self, SetupError> {
        Ok(Clients {
            built: build_clients(sites, base)?,
            base: base.clone(),
        })
    }

    /// The client for `key`, built now if no site of the lane had it yet.
    pub fn get(&mut self, key: &ClientKey) -> Result<Client, SetupError> {
        if let Some(c) = self.built.get(key) {
            return Ok(c.clone());
        }
        let c = build_client(key, &self.base)?;
        self.built.insert(key.clone(), c.clone());
        Ok(c)
    }
}
