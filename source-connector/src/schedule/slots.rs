//! A lane's sites as slots that a reload can add, change and empty while the
//! scheduler runs.
//!
//! A slot holds an `Arc<Site>`: a check in flight holds the same `Arc`, so a
//! site removed or changed meanwhile stays alive until its check has handed
//! its record over. Each slot has a generation, bumped when it is emptied,
//! so a heap entry of a removed site is recognised as stale and dropped. A
//! changed site keeps its slot, generation and heap entry (its next tick);
//! while the check of its previous settings still runs, that tick is
//! skipped as any tick of a running site is. A site removed while its check
//! runs is kept aside (`retired`) until that check ends: if a reload adds
//! its url again meanwhile, the new site's ticks are skipped the same way,
//! so there are never two checks of one url at once.

use std::sync::Arc;

use super::Site;
use crate::hash::fnv1a;

/// One slot.
struct Slot {
    site: Option<Arc<Site>>,
    /// The settings a changed site had, while their check may still run.
    previous: Option<Arc<Site>>,
    generation: u32,
    /// [`fnv1a`] of the site's url (as shown): a reload of a file's changes
    /// finds its sites by it without touching every site.
    url: u64,
}

/// The hash a slot keeps of `site`'s url.
pub fn url_hash(site: &Site) -> u64 {
    fnv1a(site.spec.url.as_str().as_bytes())
}

/// The slots of one lane.
#[derive(Default)]
pub struct Slots {
    slots: Vec<Slot>,
    /// Empty slots, reused first.
    free: Vec<u32>,
    /// Sites removed while a check of them ran (pruned as they end).
    retired: Vec<Arc<Site>>,
}

impl Slots {
    /// Slots holding `sites`, in order, all of generation 0.
    pub fn new(sites: Vec<Arc<Site>>) -> Self {
        Slots {
            slots: sites
                .into_iter()
                .map(|s| Slot {
                    url: url_hash(&s),
                    site: Some(s),
                    previous: None,
                    generation: 0,
                })
                .collect(),
            free: Vec::new(),
            retired: Vec::new(),
        }
    }

    /// How many sites the slots hold.
    pub fn count(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Every site held, with its slot and generation.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32, &Arc<Site>)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let site = s.site.as_ref()?;
            Some((u32::try_from(i).ok()?, s.generation, site))
        })
    }

    /// Every site held, with its slot and url hash.
    pub fn hashed(&self) -> impl Iterator<Item = (u32, u64, &Arc<Site>)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let site = s.site.as_ref()?;
            Some((u32::try_from(i).ok()?, s.url, site))
        })
    }

    /// The site in `slot` if the slot is still of `generation`.
    pub fn get(&self, slot: u32, generation: u32) -> Option<&Arc<Site>> {
        let s = self.slots.get(slot as usize)?;
        if s.generation != generation {
            return None;
        }
        s.site.as_ref()
    }

    /// The site in `slot`, of any generation.
    pub fn site(&self, slot: u32) -> Option<&Arc<Site>> {
        self.slots.get(slot as usize)?.site.as_ref()
    }

    /// Forgets the removed sites whose check has ended.
    pub fn prune_retired(&mut self) {
        self.retired.retain(|r| r.is_running());
    }

    /// The urls of the sites removed whose check may still run.
    pub fn retired(&self) -> impl Iterator<Item = &str> {
        self.retired.iter().map(|r| r.spec.url.as_str())
    }

    /// The sites removed whose check may still run.
    pub fn retired_sites(&self) -> impl Iterator<Item = &Arc<Site>> {
        self.retired.iter()
    }

    /// Puts `site` in a free slot; its slot and generation. If a site of the
    /// same url was removed and its check still runs, the new one waits for
    /// it (its ticks are skipped until that check ends).
    pub fn insert(&mut self, site: Arc<Site>) -> (u32, u32) {
        self.prune_retired();
        let previous = self
            .retired
            .iter()
            .position(|r| r.spec.url.as_str() == site.spec.url.as_str())
            .map(|i| self.retired.swap_remove(i));
        let url = url_hash(&site);
        if let Some(slot) = self.free.pop() {
            let s = &mut self.slots[slot as usize];
            s.site = Some(site);
            s.previous = previous;
            s.url = url;
            return (slot, s.generation);
        }
        self.slots.push(Slot {
            site: Some(site),
            previous,
            generation: 0,
            url,
        });
        (u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX), 0)
    }

    /// Empties `slot`: its site is not scheduled again (a check in flight
    /// finishes and delivers its record); the site removed.
    pub fn remove(&mut self, slot: u32) -> Option<Arc<Site>> {
        let s = self.slots.get_mut(slot as usize)?;
        let site = s.site.take()?;
        let previous = s.previous.take();
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
        let running = [Some(Arc::clone(&site)), previous].into_iter().flatten();
        self.retired.extend(running.filter(|r| r.is_running()));
        Some(site)
    }

    /// Puts `site` (new settings of the same url) in `slot`, keeping its
    /// place in the schedule, or with `move_tick` bumping the slot's
    /// generation (its heap entry goes stale: the caller pushes a new one);
    /// the slot's generation.
    pub fn replace(&mut self, slot: u32, site: Arc<Site>, move_tick: bool) -> u32 {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return 0;
        };
        let old = s.site.replace(site);
        s.previous = old.filter(|o| o.is_running()).or(s.previous.take());
        if move_tick {
            s.generation = s.generation.wrapping_add(1);
        }
        s.generation
    }

    /// Whether a check of the settings `slot` had before a change still runs
    /// (then its tick is skipped); forgets those settings once it does not.
    pub fn previous_running(&mut self, slot: u32) -> bool {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return false;
        };
        if s.previous.as_ref().is_some_and(|p| p.is_running()) {
            return true;
        }
        s.previous = None;
        false
    }
}
