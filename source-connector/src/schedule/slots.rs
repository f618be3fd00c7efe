//! A lane's sites as slots that a reload can add, change and empty while the
//! scheduler runs.
//!
//! A slot holds an `Arc<Site>`: a check in flight holds the same `Arc`, so a
//! site removed or changed meanwhile stays alive until its check has handed
//! its record over. Each slot has a generation, bumped when it is emptied,
//! so a heap entry of a removed site is recognised as stale and dropped. A
//! changed site keeps its slot, generation and heap entry (its next tick);
//! while the check of its previous settings still runs, that tick is
//! skipped as any tick of a running site is.

use std::sync::Arc;

use super::Site;

/// One slot.
struct Slot {
    site: Option<Arc<Site>>,
    /// The settings a changed site had, while their check may still run.
    previous: Option<Arc<Site>>,
    generation: u32,
}

/// The slots of one lane.
#[derive(Default)]
pub struct Slots {
    slots: Vec<Slot>,
    /// Empty slots, reused first.
    free: Vec<u32>,
}

impl Slots {
    /// Slots holding `sites`, in order, all of generation 0.
    pub fn new(sites: Vec<Arc<Site>>) -> Self {
        Slots {
            slots: sites
                .into_iter()
                .map(|s| Slot {
                    site: Some(s),
                    previous: None,
                    generation: 0,
                })
                .collect(),
            free: Vec::new(),
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

    /// The site in `slot` if the slot is still of `generation`.
    pub fn get(&self, slot: u32, generation: u32) -> Option<&Arc<Site>> {
        let s = self.slots.get(slot as usize)?;
        if s.generation != generation {
            return None;
        }
        s.site.as_ref()
    }

    /// Puts `site` in a free slot; its slot and generation.
    pub fn insert(&mut self, site: Arc<Site>) -> (u32, u32) {
        if let Some(slot) = self.free.pop() {
            let s = &mut self.slots[slot as usize];
            s.site = Some(site);
            return (slot, s.generation);
        }
        self.slots.push(Slot {
            site: Some(site),
            previous: None,
            generation: 0,
        });
        (u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX), 0)
    }

    /// Empties `slot`: its site is not scheduled again (a check in flight
    /// finishes and delivers its record).
    pub fn remove(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            if s.site.take().is_some() {
                s.previous = None;
                s.generation = s.generation.wrapping_add(1);
                self.free.push(slot);
            }
        }
    }

    /// Puts `site` (new settings of the same url) in `slot`, keeping its
    /// place in the schedule.
    pub fn replace(&mut self, slot: u32, site: Arc<Site>) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            let old = s.site.replace(site);
            s.previous = old.filter(|o| o.is_running()).or(s.previous.take());
        }
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
