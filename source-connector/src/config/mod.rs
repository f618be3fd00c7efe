//! The `[source]` section of `connector.toml`, read into typed, validated
//! values.
//!
//! Top-level keys of the section are the source's own settings plus the
//! defaults for every site; each `[[source.sites]]` entry (and each line of
//! `sites_file`) may override any site setting. Loading refuses what cannot
//! work (bad urls, regexes that do not compile, zero intervals, a bad shard,
//! no sites) with the key path of the problem, e.g. `source.sites[3].regex`.
//! What loading yields is used as it is: a url is a [`SiteUrl`], a regex a
//! compiled [`Pattern`], a method a [`Method`], headers [`RequestHeaders`].
//!
//! Layout (each file imports only the ones listed before it):
//! - `bounds`: the limits of every setting (`MAX_*`, `MIN_INTERVAL`);
//! - `values`: [`SiteUrl`], [`Pattern`], [`Method`], [`RequestHeaders`],
//!   each checked as it is parsed;
//! - `site`: [`SiteConfig`] (one declared site and its overrides) and
//!   [`Shard`];
//! - `section`: [`SourceConfig`], the section with its defaults;
//! - `validate`: the checks types cannot express ([`validate_site`] for a
//!   site, the `Validate` impl of [`SourceConfig`] for the section).

mod bounds;
mod section;
mod site;
mod validate;
mod values;

pub use bounds::*;
pub use section::{OutsideSetting, SourceConfig};
pub use site::{Shard, SiteConfig};
pub use validate::validate_site;
pub use values::{Method, Pattern, RequestHeaders, SiteUrl};

#[cfg(test)]
mod tests;
