//! The local wait queues: waiters for the same lock in this elector line up first come, first
//! served, and only the head of a line contends in the store, so one elector is one contender
//! per lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use sync_protocol::LockName;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::metrics::locks::LockSeries;

/// Every lock's line of waiters here.
pub(super) struct Queues {
    state: Mutex<Lines>,
    /// Counts the waiters, in total and per lock: one per place taken and not yet left.
    metrics: Metrics,
}

#[derive(Default)]
struct Lines {
    lines: HashMap<LockName, VecDeque<(u64, Arc<Notify>)>>,
    next: u64,
}

/// A waiter's place in a lock's line; leaving it (by drop) lets the next waiter move up.
pub(super) struct Place {
    queues: Arc<Queues>,
    name: LockName,
    id: u64,
    turn: Arc<Notify>,
    series: Arc<LockSeries>,
}

impl Queues {
    /// Empty lines, counting waiters in `metrics`.
    pub(super) fn new(metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(Lines::default()),
            metrics,
        })
    }

    /// Takes the last place in `name`'s line.
    pub(super) fn join(self: &Arc<Self>, name: &LockName) -> Place {
        let turn = Arc::new(Notify::new());
        let series = self.metrics.locks.series(name);
        series.waiters.inc();
        self.metrics.waiters.inc();
        let mut state = self.lines();
        state.next += 1;
        let id = state.next;
        state
            .lines
            .entry(name.clone())
            .or_default()
            .push_back((id, turn.clone()));
        Place {
            queues: self.clone(),
            name: name.clone(),
            id,
            turn,
            series,
        }
    }

    /// How many wait for `name` here.
    pub(super) fn len(&self, name: &LockName) -> usize {
        self.lines().lines.get(name).map_or(0, VecDeque::len)
    }

    /// How many wait for each lock, by name.
    pub(super) fn lengths(&self) -> BTreeMap<String, usize> {
        self.lines()
            .lines
            .iter()
            .map(|(name, line)| (name.to_string(), line.len()))
            .collect()
    }

    fn lines(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.state.lock().expect("wait queues poisoned")
    }
}

impl Place {
    /// Whether this waiter is at the head of its line.
    pub(super) fn is_head(&self) -> bool {
        self.queues
            .lines()
            .lines
            .get(&self.name)
            .and_then(|line| line.front())
            .is_some_and(|(id, _)| *id == self.id)
    }

    /// Fires when this waiter may have reached the head.
    pub(super) fn turn(&self) -> &Arc<Notify> {
        &self.turn
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.queues.metrics.waiters.dec();
        self.series.waiters.dec();
        let mut state = self.queues.lines();
        if let Some(line) = state.lines.get_mut(&self.name) {
            let was_head = line.front().is_some_and(|(id, _)| *id == self.id);
            line.retain(|(id, _)| *id != self.id);
            if was_head && let Some((_, next)) = line.front() {
                next.notify_one();
            }
            if line.is_empty() {
                state.lines.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues() -> Arc<Queues> {
        Queues::new(Metrics::new())
    }

    #[test]
    fn waiters_reach_the_head_in_the_order_they_came() {
        let queues = queues();
        let name = LockName::new("a").unwrap();
        let first = queues.join(&name);
        let second = queues.join(&name);
        let third = queues.join(&name);
        assert!(first.is_head());
        assert!(!second.is_head() && !third.is_head());
        drop(first);
        assert!(second.is_head());
        assert!(!third.is_head());
        drop(second);
        assert!(third.is_head());
        assert_eq!(queues.len(&name), 1);
    }

    #[tokio::test]
    async fn the_next_waiter_is_woken_when_the_head_leaves() {
        let queues = queues();
        let name = LockName::new("a").unwrap();
        let head = queues.join(&name);
        let next = queues.join(&name);
        let woken = next.turn().clone();
        drop(head);
        // notify_one stores the wake-up for a waiter that is not listening yet.
        tokio::time::timeout(std::time::Duration::from_secs(5), woken.notified())
            .await
            .expect("the next waiter was not woken");
        assert!(next.is_head());
    }

    #[test]
    fn a_cancelled_waiter_leaves_its_line_without_waking_anyone() {
        let queues = queues();
        let name = LockName::new("a").unwrap();
        let head = queues.join(&name);
        let middle = queues.join(&name);
        let last = queues.join(&name);
        drop(middle);
        assert!(
            futures_util::FutureExt::now_or_never(last.turn().notified()).is_none(),
            "the waiter behind a cancelled one was woken though the head is still there"
        );
        assert!(head.is_head());
        assert_eq!(queues.len(&name), 2);
        drop(head);
        assert!(last.is_head());
        drop(last);
        assert_eq!(queues.len(&name), 0);
        assert!(queues.lengths().is_empty(), "an empty line is forgotten");
        assert_eq!(queues.metrics.waiters.get(), 0);
    }

    #[test]
    fn lines_of_different_locks_are_independent() {
        let queues = queues();
        let (a, b) = (LockName::new("a").unwrap(), LockName::new("b").unwrap());
        let on_a = queues.join(&a);
        let on_b = queues.join(&b);
        assert!(on_a.is_head() && on_b.is_head());
        assert_eq!(
            queues.lengths(),
            BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 1)])
        );
    }
}
