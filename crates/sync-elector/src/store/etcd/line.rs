//! The waiting line of the etcd store, without I/O: which claimant of this elector waits behind
//! which key, and whom to wake when a key goes.
//!
//! A waiter sleeps until the key just before its own (its *predecessor*) is deleted (a
//! semaphore's or read-write lock's claim: until any key in its way is, `standing.rs`). The rule that
//! keeps that wake-up from being lost: an attempt announces that it is about to read the line
//! ([`Line::begin_read`]) before it sends the read, and from then on every deletion the prefix
//! watch reports for that lock is recorded for it. When the read's answer names the predecessor
//! ([`Line::wait_behind`]), a deletion the watch already reported is found in the record; a later
//! one finds the predecessor set. A deletion reported *before* `begin_read` happened before the
//! read was sent, so the (linearizable) read no longer shows that key. The read is one range over
//! the lock's keys, so the owner and the predecessor come from the same revision.
//!
//! Behind that rule, [`Line::sweep`] is the backstop for an event etcd never delivered: a periodic
//! read of every key wakes each waiter whose predecessor, or own key, is missing.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use etcd_rpc::KeyValue;
use serde_json::json;
use tokio::time::Instant;

use super::session::Share;
use crate::store::Signals;

/// A claimant: its lock's name and its holder identity.
pub(super) type Id = (String, String);

/// A claimant of this elector with a key in the line (not yet the owner).
pub(super) struct Contender {
    /// Its etcd lease (its session's), which its key lives under.
    pub lease: i64,
    /// Its key, `{prefix}{lock}/{lease:016x}-{n:x}`.
    pub key: String,
    /// The key's create revision: its place in line, and its fencing token once it owns the lock.
    pub revision: i64,
    /// The lock's ttl, also the sweep's period while this claimant waits.
    pub ttl: Duration,
    /// The keys whose deletion wakes us: a lock's predecessor (the key just before ours), or
    /// every older key in the way of a semaphore's or read-write lock's claim; empty until an
    /// attempt read the line.
    waits_for: Vec<String>,
    /// While an attempt reads the line: the keys of this lock deleted since it began.
    reading: Option<HashSet<String>>,
    /// Whether it was woken since its attempt began (it will read the line again).
    woken: bool,
    /// Its share of the session that keeps its lease alive; given up when it leaves.
    pub share: Option<Share>,
}

impl Contender {
    /// A claimant whose key was just written.
    pub fn new(
        lease: i64,
        key: String,
        revision: i64,
        ttl: Duration,
        share: Option<Share>,
    ) -> Self {
        Self {
            lease,
            key,
            revision,
            ttl,
            waits_for: Vec::new(),
            reading: None,
            woken: false,
            share,
        }
    }
}

/// A key of this elector that owns its lock.
pub(super) struct Held {
    /// The holder identity.
    pub holder: String,
    /// The fencing token: the key's create revision.
    pub token: u64,
    /// When the last renewal (or the grant) that covers it was sent.
    pub renewed: Instant,
    /// Its share of the session that keeps its lease alive.
    pub share: Share,
    /// The prefix watch reported the key's deletion: the holding is over.
    pub gone: bool,
    /// Whether the watch has covered the key since it was last read: false after the watch lost
    /// history (a compaction), until a renewal reads the key again.
    pub verified: bool,
    /// A semaphore's permit key, held beside the claim key and given up with it.
    pub permit: Option<String>,
}

/// Where a claimant stands, from one read of its lock's keys, oldest first.
#[derive(Debug, PartialEq)]
pub(super) enum Position<'a> {
    /// Its key is the oldest: it owns the lock.
    Head,
    /// It waits: `owner` holds the lock, and `predecessor` is the key just before its own.
    Behind {
        /// The oldest key.
        owner: &'a KeyValue,
        /// The key created just before the claimant's.
        predecessor: &'a KeyValue,
    },
    /// Its key is not there (its lease ran out): it must queue again.
    Gone,
}

/// Where the claimant with `key` stands in `line` (every key of one lock, by create revision).
pub(super) fn position<'a>(line: &'a [KeyValue], key: &str) -> Position<'a> {
    match line.iter().position(|kv| kv.key == key.as_bytes()) {
        Some(0) => Position::Head,
        Some(i) => Position::Behind {
            owner: &line[0],
            predecessor: &line[i - 1],
        },
        None => Position::Gone,
    }
}

/// The store's shared state: the line, the change signals, and the watch's progress.
#[derive(Default)]
pub(super) struct Line {
    /// This elector's claimants with a key in a line.
    pub contenders: HashMap<Id, Contender>,
    /// This elector's keys that own their lock, by key.
    pub held: HashMap<String, Held>,
    /// Waiters' signals: a predecessor went away, or this store changed the lock.
    pub waiters: Signals,
    /// Followers' signals: any change of the lock.
    pub observers: Signals,
    /// Whether the prefix watch is established.
    pub watching: bool,
    /// The revision the prefix watch has reported up to.
    pub watched: i64,
    /// How many waiters a sweep woke that the watch should have woken.
    pub rescued: u64,
}

impl Line {
    /// Wakes the waiter of `name` in this elector (there is at most one: only the head of the
    /// manager's local queue contends).
    pub fn wake(&mut self, name: &str) {
        for ((lock, _), c) in &mut self.contenders {
            if lock == name {
                c.woken = true;
            }
        }
        self.waiters.notify(name);
    }

    /// An attempt of `id` is about to read the line: record its lock's deletions from now on.
    pub fn begin_read(&mut self, id: &Id) {
        if let Some(c) = self.contenders.get_mut(id) {
            c.reading = Some(HashSet::new());
            c.woken = false;
        }
    }

    /// The attempt's read put `id` behind `keys` (a lock's predecessor, or every key in a
    /// semaphore's or read-write lock's claim's way). Wakes it at once if one of them, or its own
    /// key, was deleted while it read.
    pub fn wait_behind(&mut self, id: &Id, keys: &[&str]) {
        let Some(c) = self.contenders.get_mut(id) else {
            return;
        };
        let deleted = c.reading.take().unwrap_or_default();
        let gone = keys.iter().any(|k| deleted.contains(*k)) || deleted.contains(&c.key);
        c.waits_for = keys.iter().map(|k| (*k).to_owned()).collect();
        if gone {
            self.wake(&id.0);
        }
    }

    /// The attempt of `id` ended without waiting (it failed, or the claimant owns the lock or
    /// must queue again): stop recording for it.
    pub fn end_read(&mut self, id: &Id) {
        if let Some(c) = self.contenders.get_mut(id) {
            c.reading = None;
        }
    }

    /// The watch reported the deletion of `key`, of the lock `name`: wake the waiter behind it
    /// (and one whose own key it was, so that it queues again), and record it for reading
    /// attempts.
    pub fn deleted(&mut self, name: &str, key: &str) {
        for (held_key, held) in &mut self.held {
            if held_key == key || held.permit.as_deref() == Some(key) {
                held.gone = true;
            }
        }
        let mut wake = false;
        for ((lock, _), c) in &mut self.contenders {
            if lock != name {
                continue;
            }
            if let Some(deleted) = &mut c.reading {
                deleted.insert(key.to_owned());
            }
            wake |= c.waits_for.iter().any(|k| k == key) || c.key == key;
        }
        if wake {
            self.wake(name);
        }
    }

    /// etcd said the session lease `lease` is gone, and every key under it: wake its waiters so
    /// they queue again (the watch reports the keys' deletions too; this does not wait for it).
    pub fn lease_gone(&mut self, lease: i64) {
        let names: HashSet<String> = self
            .contenders
            .iter()
            .filter(|(_, c)| c.lease == lease)
            .map(|((name, _), _)| name.clone())
            .collect();
        for name in names {
            self.wake(&name);
        }
    }

    /// Takes out the holdings under `lease` that nobody renewed for a whole ttl, as of `now`.
    pub fn unrenewed(&mut self, lease: i64, now: Instant) -> Vec<(String, Held)> {
        self.take_held(|_, h| {
            let session = h.share.session();
            session.lease == lease && h.renewed + session.ttl <= now
        })
    }

    /// Takes out the holdings, by key, that `which` picks.
    pub fn take_held(&mut self, mut which: impl FnMut(&str, &Held) -> bool) -> Vec<(String, Held)> {
        self.held.extract_if(|key, held| which(key, held)).collect()
    }

    /// How often to sweep: the shortest ttl among waiting claimants, or `None` when nobody
    /// waits behind a predecessor (then there is nothing to check).
    pub fn sweep_period(&self) -> Option<Duration> {
        self.contenders
            .values()
            .filter(|c| !c.waits_for.is_empty())
            .map(|c| c.ttl)
            .min()
    }

    /// The backstop: `present` holds every key under the prefix at `revision`, read after the
    /// sweep began. Wakes each waiter not already woken whose key existed then and whose
    /// predecessor or own key is missing. Returns how many of those the watch should already
    /// have woken (it had reported past `revision`): lost wake-ups, counted in `rescued`.
    pub fn sweep(&mut self, present: &HashSet<&str>, revision: i64) -> usize {
        let stuck: HashSet<String> = self
            .contenders
            .iter()
            .filter(|(_, c)| !c.woken && c.reading.is_none() && c.revision <= revision)
            .filter(|(_, c)| {
                !c.waits_for.is_empty()
                    && (c.waits_for.iter().any(|k| !present.contains(k.as_str()))
                        || !present.contains(c.key.as_str()))
            })
            .map(|((lock, _), _)| lock.clone())
            .collect();
        for lock in &stuck {
            self.wake(lock);
        }
        let missed = if self.watched >= revision {
            stuck.len()
        } else {
            0
        };
        self.rescued += missed as u64;
        missed
    }

    /// What this state holds, for a person looking at a stuck waiter.
    pub fn describe(&self) -> serde_json::Value {
        let mut contenders: Vec<_> = self
            .contenders
            .iter()
            .map(|((lock, holder), c)| {
                json!({
                    "lock": lock,
                    "holder": holder,
                    "lease": c.lease,
                    "key": c.key,
                    "revision": c.revision,
                    "waits_for": c.waits_for,
                    "reading": c.reading.is_some(),
                    "woken": c.woken,
                })
            })
            .collect();
        contenders.sort_by_key(|c| c["revision"].as_i64());
        json!({
            "watching": self.watching,
            "watched_revision": self.watched,
            "waiters_the_sweep_rescued": self.rescued,
            "contenders": contenders,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, revision: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            create_revision: revision,
            ..Default::default()
        }
    }

    #[test]
    fn a_position_comes_from_one_read_of_the_line() {
        let line = [kv("l/a", 3), kv("l/b", 5), kv("l/c", 9)];
        assert_eq!(position(&line, "l/a"), Position::Head);
        assert_eq!(
            position(&line, "l/c"),
            Position::Behind {
                owner: &line[0],
                predecessor: &line[1]
            }
        );
        assert_eq!(position(&line, "l/x"), Position::Gone);
        assert_eq!(position(&[], "l/a"), Position::Gone);
    }

    /// A tiny etcd for the model: keys of one lock with their create revisions, and the log of
    /// deletions the prefix watch will report, in revision order.
    #[derive(Clone)]
    struct Etcd {
        keys: Vec<(String, i64)>,
        revision: i64,
        deletions: Vec<String>,
    }

    impl Etcd {
        fn read(&self) -> Vec<KeyValue> {
            self.keys.iter().map(|(k, r)| kv(k, *r)).collect()
        }

        fn delete(&mut self, key: &str) {
            self.revision += 1;
            self.keys.retain(|(k, _)| k != key);
            self.deletions.push(key.to_owned());
        }
    }

    /// The steps one scenario interleaves: the waiter's attempt (begin, read, settle), the
    /// deletions of the keys ahead of it, and the watch reporting each deletion.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Step {
        Begin,
        Read,
        Settle,
        Delete(usize),
        Report,
    }

    /// What the protocol under test does at each step of the waiter.
    trait Protocol {
        fn begin(&self, line: &mut Line, id: &Id);
        /// Returns what the attempt read, to be used at settle.
        fn read(&self, etcd: &Etcd) -> Vec<KeyValue>;
        /// Settles the attempt; `true` when it acquired.
        fn settle(&self, line: &mut Line, id: &Id, read: &[KeyValue], etcd: &Etcd) -> bool;
    }

    /// Today's protocol, with the real [`Line`].
    struct OneRead;

    impl Protocol for OneRead {
        fn begin(&self, line: &mut Line, id: &Id) {
            line.begin_read(id);
        }
        fn read(&self, etcd: &Etcd) -> Vec<KeyValue> {
            etcd.read()
        }
        fn settle(&self, line: &mut Line, id: &Id, read: &[KeyValue], _: &Etcd) -> bool {
            let key = line.contenders[id].key.clone();
            match position(read, &key) {
                Position::Head => true,
                Position::Behind { predecessor, .. } => {
                    let predecessor = String::from_utf8(predecessor.key.clone()).unwrap();
                    line.wait_behind(id, &[&predecessor]);
                    false
                }
                Position::Gone => unreachable!("the waiter's key stays"),
            }
        }
    }

    /// The protocol before issue 12: the owner read first, the predecessor read separately, then
    /// the predecessor set, then a look whether it still exists. Kept to show the explorer finds
    /// the lost wake-up it had.
    struct TwoReads;

    impl Protocol for TwoReads {
        fn begin(&self, _: &mut Line, _: &Id) {}
        fn read(&self, etcd: &Etcd) -> Vec<KeyValue> {
            etcd.read() // the owner read
        }
        fn settle(&self, line: &mut Line, id: &Id, owner_read: &[KeyValue], etcd: &Etcd) -> bool {
            let key = line.contenders[id].key.clone();
            if owner_read.first().is_some_and(|o| o.key == key.as_bytes()) {
                return true;
            }
            // The predecessor read, later: the key just before ours *now*.
            let now = etcd.read();
            let ours = now.iter().position(|k| k.key == key.as_bytes()).unwrap();
            let predecessor = ours
                .checked_sub(1)
                .map(|i| String::from_utf8(now[i].key.clone()).unwrap());
            let c = line.contenders.get_mut(id).unwrap();
            c.waits_for = predecessor.iter().cloned().collect();
            if let Some(p) = predecessor
                && !etcd.keys.iter().any(|(k, _)| *k == p)
            {
                line.waiters.notify(&id.0);
            }
            false
        }
    }

    /// Every interleaving of one waiter's attempt with the deletions of the `ahead` keys before
    /// its own (in order, as holders release) and the watch's report of each, which comes after
    /// its deletion and in order.
    fn interleavings(ahead: usize, steps: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        let done = |steps: &[Step], s: Step| steps.contains(&s);
        let deleted = (0..ahead).filter(|i| done(steps, Step::Delete(*i))).count();
        let reported = steps.iter().filter(|s| **s == Step::Report).count();
        let attempt = [Step::Begin, Step::Read, Step::Settle]
            .into_iter()
            .find(|s| !done(steps, *s));
        let next: Vec<Step> = attempt
            .into_iter()
            .chain((deleted < ahead).then_some(Step::Delete(deleted)))
            .chain((reported < deleted).then_some(Step::Report))
            .collect();
        if next.is_empty() {
            out.push(steps.clone());
        }
        for step in next {
            steps.push(step);
            interleavings(ahead, steps, out);
            steps.pop();
        }
    }

    /// The interleavings that leave the waiter asleep although its predecessor is gone. With
    /// `lossy`, the watch may drop any of its reports, and one sweep runs at the end.
    fn lost_wake_ups(protocol: &dyn Protocol, ahead: usize, lossy: bool) -> Vec<Vec<Step>> {
        let mut all = Vec::new();
        interleavings(ahead, &mut Vec::new(), &mut all);
        all.into_iter()
            .filter(|steps| {
                let reports = if lossy { ahead } else { 0 };
                (0..1u32 << reports).any(|dropped| replay(protocol, ahead, steps, dropped))
            })
            .collect()
    }

    /// Runs `steps` against a fresh [`Line`], dropping the reports whose bit is set in
    /// `dropped`; whether it ends in a lost wake-up.
    fn replay(protocol: &dyn Protocol, ahead: usize, steps: &[Step], dropped: u32) -> bool {
        let mut etcd = Etcd {
            keys: (0..=ahead)
                .map(|i| (format!("l/{i}"), 10 + i as i64))
                .collect(),
            revision: 20,
            deletions: Vec::new(),
        };
        let id: Id = ("l".into(), "waiter".into());
        let mut line = Line::default();
        let ours = format!("l/{ahead}");
        line.contenders.insert(
            id.clone(),
            Contender::new(1, ours, 10 + ahead as i64, Duration::from_secs(5), None),
        );
        let woken = line.waiters.subscribe("l");
        let (mut read, mut acquired, mut reports) = (Vec::new(), false, 0);
        for step in steps {
            match step {
                Step::Begin => protocol.begin(&mut line, &id),
                Step::Read => read = protocol.read(&etcd),
                Step::Settle => acquired = protocol.settle(&mut line, &id, &read, &etcd),
                Step::Delete(i) => etcd.delete(&format!("l/{i}")),
                Step::Report => {
                    if dropped & (1 << reports) == 0 {
                        line.deleted("l", &etcd.deletions[reports].clone());
                    }
                    reports += 1;
                }
            }
        }
        if dropped != 0 && !acquired {
            line.watched = etcd.revision;
            line.sweep(
                &etcd.keys.iter().map(|(k, _)| k.as_str()).collect(),
                etcd.revision,
            );
        }
        let predecessor = line.contenders[&id].waits_for.first().cloned();
        let predecessor_gone = !etcd
            .keys
            .iter()
            .any(|(k, _)| Some(k) == predecessor.as_ref());
        !acquired && predecessor_gone && !woken.has_changed().unwrap()
    }

    #[test]
    fn no_interleaving_of_reads_deletions_and_reports_loses_a_wake_up() {
        for ahead in 1..=3 {
            let lost = lost_wake_ups(&OneRead, ahead, false);
            assert!(lost.is_empty(), "{ahead} ahead: {:?}", lost.first());
        }
    }

    #[test]
    fn the_sweep_wakes_a_waiter_whose_deletion_the_watch_dropped() {
        for ahead in 1..=3 {
            let lost = lost_wake_ups(&OneRead, ahead, true);
            assert!(lost.is_empty(), "{ahead} ahead: {:?}", lost.first());
        }
    }

    #[test]
    fn the_explorer_finds_the_lost_wake_up_of_the_two_read_protocol() {
        let lost = lost_wake_ups(&TwoReads, 1, false);
        assert!(
            lost.contains(&vec![
                Step::Begin,
                Step::Read,
                Step::Delete(0),
                Step::Settle,
                Step::Report
            ]),
            "the owner releasing between the two reads leaves the waiter asleep: {lost:?}"
        );
    }

    #[test]
    fn a_waiter_reading_when_its_own_key_goes_is_woken_to_queue_again() {
        let id: Id = ("l".into(), "w".into());
        let mut line = Line::default();
        line.contenders.insert(
            id.clone(),
            Contender::new(1, "l/b".into(), 2, Duration::from_secs(5), None),
        );
        let woken = line.waiters.subscribe("l");
        line.deleted("m", "l/b");
        assert!(!woken.has_changed().unwrap(), "another lock's deletion");
        line.begin_read(&id);
        line.deleted("l", "l/b");
        line.wait_behind(&id, &["l/a"]);
        assert!(woken.has_changed().unwrap());
        assert!(line.contenders[&id].woken);
    }
}
