//! Change signals per lock name, shared by the stores: subscribers wait on a counter that every
//! change of their lock bumps. Senders nobody listens to are pruned, so names seen once do not
//! accumulate.

use std::collections::HashMap;

use tokio::sync::watch;

use super::Changes;

/// How many names may hold senders before the ones without subscribers are pruned.
const PRUNE_AT: usize = 1024;

/// One signal per lock name that has subscribers.
#[derive(Debug, Default)]
pub struct Signals {
    senders: HashMap<String, watch::Sender<u64>>,
}

impl Signals {
    /// A receiver that changes with every [`notify`](Self::notify) of `name`.
    pub fn subscribe(&mut self, name: &str) -> Changes {
        if self.senders.len() >= PRUNE_AT {
            self.senders.retain(|_, tx| tx.receiver_count() > 0);
        }
        self.senders
            .entry(name.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Whether anyone still listens for `name`.
    pub fn has_subscribers(&self, name: &str) -> bool {
        self.senders
            .get(name)
            .is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// Wakes every subscriber of `name`.
    pub fn notify(&mut self, name: &str) {
        if let Some(tx) = self.senders.get(name) {
            tx.send_modify(|n| *n += 1);
            if tx.receiver_count() == 0 {
                self.senders.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_hear_only_their_lock_and_idle_senders_go() {
        let mut signals = Signals::default();
        let mut a = signals.subscribe("a");
        let b = signals.subscribe("b");
        signals.notify("a");
        assert!(a.has_changed().unwrap());
        assert!(!b.has_changed().unwrap());
        a.mark_unchanged();
        drop(b);
        signals.notify("b");
        assert_eq!(
            signals.senders.len(),
            1,
            "b's sender had no subscriber left"
        );
    }
}
