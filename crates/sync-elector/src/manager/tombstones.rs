//! Ended leases, remembered for a while, so that a late renew learns *why* its lease is gone
//! (`410 lease_lost` with the reason) instead of a bare "unknown lease".

use std::collections::{HashMap, HashSet, VecDeque};

#[cfg(test)]
use super::lease::Cause;
use super::lease::{Ending, LeaseError};
use crate::lease_id::LeaseId;

/// How many ended lease ids are remembered.
pub(super) const TOMBSTONES: usize = 4096;

/// The last [`TOMBSTONES`] ended leases and how each ended; the oldest is forgotten first.
#[derive(Default)]
pub(super) struct Tombstones {
    order: VecDeque<LeaseId>,
    lost: HashMap<LeaseId, String>,
    released: HashSet<LeaseId>,
}

impl Tombstones {
    /// Remembers that lease `id` ended with `ending`.
    pub(super) fn bury(&mut self, id: LeaseId, ending: &Ending) {
        if self.order.len() >= TOMBSTONES
            && let Some(old) = self.order.pop_front()
        {
            self.lost.remove(&old);
            self.released.remove(&old);
        }
        self.order.push_back(id);
        match ending {
            Ending::Released => {
                self.released.insert(id);
            }
            Ending::Lost(_, reason) => {
                self.lost.insert(id, reason.clone());
            }
        }
    }

    /// What to answer for lease `id`, which is not live: lost with its reason, or unknown
    /// (released, forgotten, or never granted).
    pub(super) fn error(&self, id: LeaseId) -> LeaseError {
        match self.lost.get(&id) {
            Some(reason) => LeaseError::Lost(reason.clone()),
            None => LeaseError::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lease id numbered `n`.
    fn id(n: usize) -> LeaseId {
        format!("{n:032x}").parse().unwrap()
    }

    #[test]
    fn a_lost_lease_says_why_and_a_released_one_is_unknown() {
        let mut tombstones = Tombstones::default();
        tombstones.bury(
            id(0xa),
            &Ending::Lost(Cause::Expired, "the holder went silent".into()),
        );
        tombstones.bury(id(0xb), &Ending::Released);
        assert_eq!(
            tombstones.error(id(0xa)),
            LeaseError::Lost("the holder went silent".into())
        );
        assert_eq!(tombstones.error(id(0xb)), LeaseError::Unknown);
        assert_eq!(tombstones.error(id(0xc)), LeaseError::Unknown);
    }

    #[test]
    fn the_oldest_is_forgotten_first() {
        let mut tombstones = Tombstones::default();
        for i in 0..TOMBSTONES + 1 {
            tombstones.bury(id(i), &Ending::Lost(Cause::Taken, format!("reason {i}")));
        }
        assert_eq!(tombstones.error(id(0)), LeaseError::Unknown);
        assert_eq!(tombstones.error(id(1)), LeaseError::Lost("reason 1".into()));
        assert_eq!(
            tombstones.error(id(TOMBSTONES)),
            LeaseError::Lost(format!("reason {TOMBSTONES}"))
        );
        assert_eq!(tombstones.order.len(), TOMBSTONES);
        assert_eq!(tombstones.lost.len(), TOMBSTONES);
    }
}
