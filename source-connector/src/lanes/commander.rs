//! [`Commander`]: how a reload reaches the running lanes — each lane claims
//! the urls of the new sites it runs now (they stay on that lane, with
//! their schedule and client), the new urls go to the lanes with the fewest
//! sites ([`place`]), and each lane applies its share
//! ([`crate::schedule::Command`]).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::schedule::{Applied, Command};
use crate::sites::{Changes, SiteSpec};

/// The lanes have stopped (shutdown, or a crash): a reload cannot be applied.
#[derive(Debug, thiserror::Error)]
#[error("the check threads have stopped; the reload was not applied")]
pub struct LanesGone;

/// Tells the running lanes which sites to run after a reload: each lane
/// keeps the urls it has (so their schedules and clients stay where they
/// are), and the new urls go to the lanes with the fewest sites.
#[derive(Clone)]
pub struct Commander {
    pub(super) lanes: Vec<mpsc::UnboundedSender<Command>>,
}

impl Commander {
    /// Runs exactly `sites` from now on, over the lanes; the counts of
    /// every lane, added up.
    pub async fn apply(&self, sites: Vec<SiteSpec>) -> Result<Applied, LanesGone> {
        // Shared as it is (a million specs are not copied into another list).
        let wanted = Arc::new(sites);
        let mut claims = Vec::with_capacity(self.lanes.len());
        for lane in &self.lanes {
            let (reply, answer) = oneshot::channel();
            let wanted = Arc::clone(&wanted);
            lane.send(Command::Claim { wanted, reply })
                .map_err(|_| LanesGone)?;
            claims.push(answer);
        }
        let mut claimed = Vec::with_capacity(claims.len());
        for answer in claims {
            claimed.push(answer.await.map_err(|_| LanesGone)?);
        }
        let none = vec![0; claimed.len()];
        let mut answers = Vec::with_capacity(self.lanes.len());
        for (lane, mine) in self.lanes.iter().zip(place(claimed, &none, wanted.len())) {
            let (reply, answer) = oneshot::channel();
            let wanted = Arc::clone(&wanted);
            lane.send(Command::Apply {
                wanted,
                mine,
                reply,
            })
            .map_err(|_| LanesGone)?;
            answers.push(answer);
        }
        let mut total = Applied::default();
        for answer in answers {
            total.add(answer.await.map_err(|_| LanesGone)?);
        }
        Ok(total)
    }
}

impl Commander {
    /// Applies a reload of a file's changed lines: puts `changes.put` (a
    /// url a lane runs stays there; a new one goes to the lane with the
    /// fewest sites) and removes `changes.removed`; every other site runs
    /// on untouched. The counts of every lane, added up.
    pub async fn apply_changes(&self, changes: Changes) -> Result<Applied, LanesGone> {
        let changes = Arc::new(changes);
        let mut claims = Vec::with_capacity(self.lanes.len());
        for lane in &self.lanes {
            let (reply, answer) = oneshot::channel();
            let changes = Arc::clone(&changes);
            (lane.send(Command::ClaimChanges { changes, reply })).map_err(|_| LanesGone)?;
            claims.push(answer);
        }
        let (mut claimed, mut running) = (Vec::new(), Vec::new());
        for answer in claims {
            let (mine, count) = answer.await.map_err(|_| LanesGone)?;
            claimed.push(mine);
            running.push(count);
        }
        let mut answers = Vec::with_capacity(self.lanes.len());
        let placed = place(claimed, &running, changes.put.len());
        for (lane, mine) in self.lanes.iter().zip(placed) {
            let (reply, answer) = oneshot::channel();
            let changes = Arc::clone(&changes);
            let command = Command::ApplyChanges {
                changes,
                mine,
                reply,
            };
            lane.send(command).map_err(|_| LanesGone)?;
            answers.push(answer);
        }
        let mut total = Applied::default();
        for answer in answers {
            total.add(answer.await.map_err(|_| LanesGone)?);
        }
        Ok(total)
    }
}

impl Commander {
    /// Applies a whole new list of sites that comes in chunks: first every
    /// running site whose url hash is not in `keep` (sorted) is removed,
    /// then each chunk from `chunks` is put as [`Commander::apply_changes`]
    /// puts (a url a lane runs stays there, a new one goes to the lane with
    /// the fewest sites). Nothing holds every new site at once. The counts
    /// of every step, taken together ([`Applied::then`]).
    pub async fn apply_in_chunks(
        &self,
        keep: Vec<u64>,
        mut chunks: mpsc::Receiver<Vec<SiteSpec>>,
    ) -> Result<Applied, LanesGone> {
        let retain = Changes {
            retain: Some(keep),
            ..Changes::default()
        };
        let mut total = Applied::default();
        total.then(self.apply_changes(retain).await?);
        while let Some(put) = chunks.recv().await {
            let put = Changes {
                put,
                ..Changes::default()
            };
            total.then(self.apply_changes(put).await?);
        }
        Ok(total)
    }
}

/// Each lane's share of `total` sites: what it `claimed` (the urls it runs
/// now; a site claimed twice stays with the first lane), then each
/// unclaimed site to the lane with the fewest (counting `base` sites it
/// has besides its share).
pub fn place(claimed: Vec<Vec<u32>>, base: &[usize], total: usize) -> Vec<Vec<u32>> {
    let mut owned = vec![false; total];
    let mut shares: Vec<Vec<u32>> = claimed
        .into_iter()
        .map(|claim| {
            claim
                .into_iter()
                .filter(|&i| !std::mem::replace(&mut owned[i as usize], true))
                .collect()
        })
        .collect();
    if shares.is_empty() {
        return shares;
    }
    for (i, _) in owned.iter().enumerate().filter(|(_, o)| !**o) {
        let size = |l: usize| shares[l].len() + base.get(l).copied().unwrap_or(0);
        let fewest = (0..shares.len())
            .min_by_key(|&l| size(l))
            .unwrap_or_default();
        shares[fewest].push(u32::try_from(i).unwrap_or(u32::MAX));
    }
    shares
}
