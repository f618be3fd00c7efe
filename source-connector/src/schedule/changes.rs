//! A reload of a file's changed lines in one lane ([`Changes`]): the sites
//! to put and the urls to remove (or the only ones to keep), found by the
//! url hash each slot keeps —
//! one pass over a vector of hashes, no index of urls, no list of every
//! site. What is found goes the way a whole list's difference goes
//! ([`Scheduler::carry_out`]).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::{diff, Applied, Scheduler, Shared};
use crate::hash::fnv1a;
use crate::sites::Changes;

impl Scheduler {
    /// The sites of `changes.put` (by index) whose url this lane runs, or
    /// removed while a check of it still runs (it waits here for that
    /// check); and how many sites it runs.
    pub(super) fn claim_changes(&mut self, changes: &Changes) -> (Vec<u32>, usize) {
        self.slots.prune_retired();
        let put = by_url(changes);
        let running = self.slots.hashed().map(|(_, h, s)| (h, s));
        let retired = self
            .slots
            .retired_sites()
            .map(|s| (super::slots::url_hash(s), s));
        let mut mine: Vec<u32> = running
            .chain(retired)
            .filter_map(|(h, site)| {
                let &i = put.get(&h)?;
                let same = changes.put[i].url.as_str() == site.spec.url.as_str();
                same.then(|| u32::try_from(i).ok()).flatten()
            })
            .collect();
        mine.sort_unstable();
        mine.dedup();
        (mine, self.slots.count())
    }

    /// Puts `mine` of `changes.put` and removes `changes.removed` from
    /// `now` on; see [`super::Command::ApplyChanges`].
    pub(super) fn apply_changes(
        &mut self,
        changes: &Changes,
        mine: &[u32],
        now: Instant,
        shared: &Shared,
    ) -> Applied {
        let removed: HashSet<u64> = changes.removed.iter().copied().collect();
        let mut put: HashMap<u64, usize> = mine
            .iter()
            .map(|&i| {
                let url = changes.put[i as usize].url.as_str();
                (fnv1a(url.as_bytes()), i as usize)
            })
            .collect();
        let mut plan = diff::Plan::default();
        let mut kept = 0;
        for (slot, hash, site) in self.slots.hashed() {
            let spec = &site.spec;
            match put.get(&hash) {
                Some(&i) if changes.put[i].url.as_str() == spec.url.as_str() => {
                    put.remove(&hash);
                    if spec.same_settings(&changes.put[i]) {
                        kept += 1;
                    } else {
                        plan.changed.push((slot, i));
                    }
                }
                _ if removed.contains(&hash) || !retained(changes, hash) => {
                    plan.removed.push(slot);
                }
                _ => kept += 1,
            }
        }
        plan.added = put.into_values().collect();
        plan.added.sort_unstable();
        plan.unchanged = kept;
        self.carry_out(plan, &changes.put, now, shared)
    }
}

/// Whether `changes` keeps a site of url hash `hash` running (it does
/// unless it names the sites to retain and not this one).
fn retained(changes: &Changes, hash: u64) -> bool {
    (changes.retain.as_ref()).is_none_or(|keep| keep.binary_search(&hash).is_ok())
}

/// The index in `changes.put` of each url hash.
fn by_url(changes: &Changes) -> HashMap<u64, usize> {
    (changes.put.iter().enumerate())
        .map(|(i, s)| (fnv1a(s.url.as_str().as_bytes()), i))
        .collect()
}
