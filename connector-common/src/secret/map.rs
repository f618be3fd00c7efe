//! A string map whose entries are secret by meaning: a [`MaskRule`] decides
//! from each name whether its value is a credential.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::value::MASK;

/// Decides from an entry's name whether its value is a credential.
pub trait MaskRule {
    /// Whether the value of `name` must never be shown.
    fn is_secret(name: &str) -> bool;
}

/// A string map whose credential entries (by `R`) never print.
pub struct SecretMap<R> {
    map: BTreeMap<String, String>,
    rule: PhantomData<R>,
}

impl<R> SecretMap<R> {
    /// An empty map.
    pub fn new() -> Self {
        Self {
            map: BTreeMap::new(),
            rule: PhantomData,
        }
    }

    /// Sets `name` to `value`.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.map.insert(name.into(), value.into());
    }
}

impl<R: MaskRule> SecretMap<R> {
    /// The entries as shown: credential values replaced by [`MASK`].
    pub fn shown(&self) -> BTreeMap<&str, &str> {
        self.map
            .iter()
            .map(|(k, v)| {
                let shown = if R::is_secret(k) && !v.is_empty() {
                    MASK
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect()
    }
}

impl<R> Default for SecretMap<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> Clone for SecretMap<R> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
            rule: PhantomData,
        }
    }
}

impl<R> PartialEq for SecretMap<R> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<R> Deref for SecretMap<R> {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<R> From<BTreeMap<String, String>> for SecretMap<R> {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self {
            map,
            rule: PhantomData,
        }
    }
}

impl<R: MaskRule> fmt::Debug for SecretMap<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.shown()).finish()
    }
}

impl<R: MaskRule> Serialize for SecretMap<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.shown().serialize(s)
    }
}

impl<'de, R> Deserialize<'de> for SecretMap<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(d).map(Self::from)
    }
}
