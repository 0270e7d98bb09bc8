//! The rules of a record that keeps every grant of one name, a counting semaphore's permits or a
//! read-write lock's shared and exclusive grants (docs/semaphores.md), without I/O. The memory
//! store is to keep such a record in its map and the Kubernetes store in one Lease; deciding with
//! these rules, they grant alike.
//!
//! - A name has one [`Kind`] while any entry of it lives. Asked for as another kind, or as a
//!   semaphore of another size, it answers [`Decision::Conflict`] and changes nothing. When no
//!   entry lives, the next claim defines it anew.
//! - A semaphore grants the lowest free permit while fewer than N grants live.
//! - A read-write lock grants *shared* while no exclusive grant and no waiting writer lives, and
//!   *exclusive* while nothing else lives. A writer that finds readers leaves a [`Held::Waiting`]
//!   entry, which stops new shared grants; each of its attempts refreshes it, and it is dropped
//!   like a grant when they stop.
//! - Every grant takes the next token from one counter per name, so tokens order grants across
//!   permits and modes (docs/semaphores.md, "Fencing tokens").
//! - No more than [`MAX_ENTRIES`] entries live at once.
//! - An entry is dead once `now` reaches its `expires_at`, which the caller sets on its own
//!   monotonic clock (docs/timing.md, rule 1): the memory store from the last renewal, the
//!   Kubernetes store from when it last saw the entry change. Dead entries go at the next
//!   decision.

use std::fmt;
use std::time::Duration;

use sync_protocol::LockName;
use tokio::time::Instant;

use super::{Grant, Holding, Record};

/// The most entries (grants and waiting writers) one name keeps at once: a Lease's annotations
/// must stay below the API server's 256 KiB.
pub const MAX_ENTRIES: usize = sync_protocol::MAX_PERMITS as usize;

/// What a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A lock. A record of these rules is never one; stores name it in a [`Conflict`] when a
    /// lock's record is asked for as something else.
    Lock,
    /// A counting semaphore.
    Semaphore {
        /// How many may hold it at once.
        permits: u32,
    },
    /// A read-write lock.
    ReadWrite,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lock => f.write_str("a lock"),
            Self::Semaphore { permits: 1 } => f.write_str("a semaphore of 1 permit"),
            Self::Semaphore { permits } => write!(f, "a semaphore of {permits} permits"),
            Self::ReadWrite => f.write_str("a read-write lock"),
        }
    }
}

/// What a claim asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asks {
    /// A permit of a semaphore.
    Permit {
        /// The semaphore's size, as the claimant knows it.
        permits: u32,
    },
    /// A read-write lock, shared.
    Shared,
    /// A read-write lock, exclusive.
    Exclusive,
}

impl Asks {
    /// The kind of name this claim expects.
    pub fn kind(self) -> Kind {
        match self {
            Self::Permit { permits } => Kind::Semaphore { permits },
            Self::Shared | Self::Exclusive => Kind::ReadWrite,
        }
    }
}

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// A semaphore's permit, 0 to N-1.
    Permit(u32),
    /// A shared grant.
    Shared,
    /// The exclusive grant.
    Exclusive,
    /// Nothing yet: a writer waits for the readers to leave, and no new reader may enter.
    Waiting,
}

/// One entry of the record: a grant, or a waiting writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Who holds it (the elector's identity and session).
    pub holder: String,
    /// What it holds.
    pub held: Held,
    /// Its fencing token; 0 for a waiting writer.
    pub token: u64,
    /// Its ttl.
    pub ttl: Duration,
    /// The value shown to followers.
    pub value: Option<String>,
    /// How often its holder has renewed it; a change is what tells an observer it lives.
    pub renewals: u64,
    /// When it dies unless renewed, on this elector's clock.
    pub expires_at: Instant,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        now < self.expires_at
    }

    fn granted(&self) -> bool {
        self.held != Held::Waiting
    }
}

/// A claim on a name, as these rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim<'a> {
    /// Who asks.
    pub holder: &'a str,
    /// What for.
    pub asks: Asks,
    /// The ttl of the grant asked for.
    pub ttl: Duration,
    /// The value to show to followers.
    pub value: Option<&'a str>,
}

/// The record of one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// What the name is; `None` until first claimed.
    pub kind: Option<Kind>,
    /// The last token handed out; the next grant takes one more.
    pub token: u64,
    /// The live entries (and dead ones not yet dropped), oldest first.
    pub entries: Vec<Entry>,
}

/// A name asked for as what it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// What the name is.
    pub is: Kind,
    /// What the claim expected.
    pub asked: Kind,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "it is {}; this request asks for {}", self.is, self.asked)
    }
}

/// What [`Grants::decide`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The claim holds this new entry.
    Granted(Entry),
    /// Not now. `retry_at`: when an entry in the way dies, or when a waiting writer must come
    /// back to refresh its entry, whichever is first. `changed`: whether the record changed (dead
    /// entries dropped, a waiting writer's entry added or refreshed) and must be written.
    Busy {
        /// When to try again even if nothing is heard.
        retry_at: Instant,
        /// Whether the record must be written.
        changed: bool,
    },
    /// The name is another kind, or a semaphore of another size, and some entry of it lives.
    /// Nothing needs writing (dead entries may have been dropped, which changes nothing).
    Conflict(Conflict),
}

/// A renewal or release of an entry that is not there (any more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the grant is no longer held by this holder")]
pub struct NotHolder;

impl Grants {
    /// Decides `claim` at `now`, dropping dead entries first.
    pub fn decide(&mut self, claim: &Claim<'_>, now: Instant) -> Decision {
        let before = self.entries.len();
        self.entries.retain(|e| e.live(now));
        let mut changed = self.entries.len() != before;
        let asked = claim.asks.kind();
        match self.kind {
            Some(is) if is != asked && !self.entries.is_empty() => {
                return Decision::Conflict(Conflict { is, asked });
            }
            _ => {}
        }
        if self.entries.is_empty() {
            changed |= self.kind != Some(asked);
            self.kind = Some(asked);
        }
        let others = || self.entries.iter().filter(|e| e.holder != claim.holder);
        let in_the_way: Vec<Instant> = match claim.asks {
            Asks::Permit { permits } => {
                let held = self.entries.len();
                if held < permits as usize && held < MAX_ENTRIES {
                    let free = (0..permits)
                        .find(|p| self.entries.iter().all(|e| e.held != Held::Permit(*p)))
                        .expect("fewer grants than permits leave one free");
                    return self.grant(claim, Held::Permit(free), now);
                }
                self.entries.iter().map(|e| e.expires_at).collect()
            }
            Asks::Shared => {
                let blocking: Vec<Instant> = others()
                    .filter(|e| matches!(e.held, Held::Exclusive | Held::Waiting))
                    .map(|e| e.expires_at)
                    .collect();
                if blocking.is_empty() && self.entries.len() < MAX_ENTRIES {
                    return self.grant(claim, Held::Shared, now);
                }
                if blocking.is_empty() {
                    self.entries.iter().map(|e| e.expires_at).collect()
                } else {
                    blocking
                }
            }
            Asks::Exclusive => {
                if others().next().is_none() {
                    self.entries.retain(|e| e.holder != claim.holder);
                    return self.grant(claim, Held::Exclusive, now);
                }
                let writers: Vec<Instant> = others()
                    .filter(|e| matches!(e.held, Held::Exclusive | Held::Waiting))
                    .map(|e| e.expires_at)
                    .collect();
                if !writers.is_empty() {
                    // Another writer holds or waits; an entry of ours would only block readers
                    // for nothing, so none is kept.
                    let before = self.entries.len();
                    self.entries.retain(|e| e.holder != claim.holder);
                    changed |= self.entries.len() != before;
                    writers
                } else {
                    // Only readers: wait, and stop new ones from entering.
                    let readers: Vec<Instant> = others().map(|e| e.expires_at).collect();
                    let (refreshed, refresh_at) = self.wait(claim, now);
                    changed |= refreshed;
                    readers.into_iter().chain([refresh_at]).collect()
                }
            }
        };
        let retry_at = in_the_way
            .into_iter()
            .min()
            .expect("a refused claim has something in its way");
        Decision::Busy { retry_at, changed }
    }

    /// Renews `holder`'s grant with `token`: it lives until `now + ttl` here, and its renewal
    /// count moves so that observers see it live.
    pub fn renew(&mut self, holder: &str, token: u64, now: Instant) -> Result<&Entry, NotHolder> {
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.holder == holder && e.token == token && e.granted())
            .ok_or(NotHolder)?;
        entry.renewals += 1;
        entry.expires_at = now + entry.ttl;
        Ok(entry)
    }

    /// Gives up `holder`'s grant with `token`.
    pub fn release(&mut self, holder: &str, token: u64) -> Result<(), NotHolder> {
        let at = self
            .entries
            .iter()
            .position(|e| e.holder == holder && e.token == token && e.granted())
            .ok_or(NotHolder)?;
        self.entries.remove(at);
        Ok(())
    }

    /// `holder` stopped waiting: drops its waiting entry, if any. Returns whether one went.
    pub fn abandon(&mut self, holder: &str) -> bool {
        let before = self.entries.len();
        self.entries
            .retain(|e| !(e.holder == holder && e.held == Held::Waiting));
        self.entries.len() != before
    }

    /// What the name is while an entry of it lives at `now`; `None` when none does, and the
    /// next claim may define it anew.
    pub fn live_kind(&self, now: Instant) -> Option<Kind> {
        self.entries
            .iter()
            .any(|e| e.live(now))
            .then_some(self.kind)
            .flatten()
    }

    /// The record the store contract reads: the live grants of `name` at `now`, oldest first.
    pub fn record(&self, name: &LockName, now: Instant) -> Record {
        Record {
            name: name.clone(),
            holding: None,
            token: self.token,
            kind: self.kind.unwrap_or(Kind::Lock),
            grants: self
                .holders(now)
                .map(|e| Grant {
                    held: e.held,
                    token: e.token,
                    holding: Holding {
                        holder: e.holder.clone(),
                        value: e.value.clone(),
                        ttl: e.ttl,
                        expires_at: e.expires_at,
                        since: None,
                    },
                })
                .collect(),
        }
    }

    /// The grants that live at `now`, oldest first (waiting writers left out).
    pub fn holders(&self, now: Instant) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(move |e| e.granted() && e.live(now))
    }

    fn grant(&mut self, claim: &Claim<'_>, held: Held, now: Instant) -> Decision {
        self.token += 1;
        let entry = Entry {
            holder: claim.holder.to_owned(),
            held,
            token: self.token,
            ttl: claim.ttl,
            value: claim.value.map(str::to_owned),
            renewals: 0,
            expires_at: now + claim.ttl,
        };
        self.entries.push(entry.clone());
        Decision::Granted(entry)
    }

    /// Adds `claim`'s waiting entry, or refreshes it once a third of its ttl has passed since it
    /// was last refreshed (every attempt would otherwise write, and each write wake every
    /// waiter). Returns whether it changed, and when it must be refreshed next.
    fn wait(&mut self, claim: &Claim<'_>, now: Instant) -> (bool, Instant) {
        let every = claim.ttl / 3;
        match self
            .entries
            .iter_mut()
            .find(|e| e.holder == claim.holder && e.held == Held::Waiting)
        {
            Some(waiting) => {
                let refreshed = waiting.expires_at.checked_sub(waiting.ttl).unwrap_or(now);
                if now < refreshed + every {
                    return (false, refreshed + every);
                }
                waiting.renewals += 1;
                waiting.ttl = claim.ttl;
                waiting.expires_at = now + claim.ttl;
            }
            None => self.entries.push(Entry {
                holder: claim.holder.to_owned(),
                held: Held::Waiting,
                token: 0,
                ttl: claim.ttl,
                value: None,
                renewals: 0,
                expires_at: now + claim.ttl,
            }),
        }
        (true, now + every)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TTL: Duration = Duration::from_secs(15);

    fn claim(holder: &str, asks: Asks) -> Claim<'_> {
        Claim {
            holder,
            asks,
            ttl: TTL,
            value: None,
        }
    }

    fn granted(decision: Decision) -> Entry {
        match decision {
            Decision::Granted(entry) => entry,
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    fn busy(decision: &Decision) -> bool {
        matches!(decision, Decision::Busy { .. })
    }

    #[test]
    fn a_semaphore_grants_n_then_the_lowest_free_permit_once_one_is_released() {
        let (mut grants, now) = (Grants::default(), Instant::now());
        let three = Asks::Permit { permits: 3 };
        let a = granted(grants.decide(&claim("a", three), now));
        let b = granted(grants.decide(&claim("b", three), now));
        let c = granted(grants.decide(&claim("c", three), now));
        assert_eq!(
            [a.held, b.held, c.held],
            [Held::Permit(0), Held::Permit(1), Held::Permit(2)]
        );
        let refused = grants.decide(&claim("d", three), now);
        assert_eq!(
            refused,
            Decision::Busy {
                retry_at: now + TTL,
                changed: false
            },
            "busy until the first grant runs out, and nothing to write"
        );
        grants.release("b", b.token).unwrap();
        let d = granted(grants.decide(&claim("d", three), now));
        assert_eq!(d.held, Held::Permit(1), "the permit b gave back");
        assert!(d.token > c.token);
        assert_eq!(grants.holders(now).count(), 3);
    }

    #[test]
    fn a_name_keeps_its_kind_while_an_entry_lives_and_is_defined_anew_once_none_does() {
        let (mut grants, now) = (Grants::default(), Instant::now());
        let a = granted(grants.decide(&claim("a", Asks::Permit { permits: 3 }), now));
        let before = grants.clone();
        assert_eq!(
            grants.decide(&claim("b", Asks::Permit { permits: 5 }), now),
            Decision::Conflict(Conflict {
                is: Kind::Semaphore { permits: 3 },
                asked: Kind::Semaphore { permits: 5 }
            })
        );
        let conflict = grants.decide(&claim("b", Asks::Shared), now);
        let Decision::Conflict(conflict) = conflict else {
            panic!("{conflict:?}")
        };
        assert_eq!(
            conflict.to_string(),
            "it is a semaphore of 3 permits; this request asks for a read-write lock"
        );
        assert_eq!(grants, before, "a conflict changes nothing");

        // Once the holder's grant runs out, the name may become a read-write lock.
        let later = now + TTL;
        let b = granted(grants.decide(&claim("b", Asks::Shared), later));
        assert_eq!(grants.kind, Some(Kind::ReadWrite));
        assert!(b.token > a.token, "the counter outlives the kind");
        grants.release("b", b.token).unwrap();
        granted(grants.decide(&claim("c", Asks::Permit { permits: 5 }), later));
        assert_eq!(grants.kind, Some(Kind::Semaphore { permits: 5 }));
    }

    #[test]
    fn a_waiting_writer_stops_new_readers_and_gets_in_when_the_readers_leave() {
        let (mut grants, now) = (Grants::default(), Instant::now());
        let r1 = granted(grants.decide(&claim("r1", Asks::Shared), now));
        let r2 = granted(grants.decide(&claim("r2", Asks::Shared), now));
        assert_eq!(
            grants.decide(&claim("w", Asks::Exclusive), now),
            Decision::Busy {
                retry_at: now + TTL / 3,
                changed: true
            },
            "the writer leaves an entry and must refresh it within a third of its ttl"
        );
        assert!(
            busy(&grants.decide(&claim("r3", Asks::Shared), now)),
            "a reader after a waiting writer waits"
        );
        assert!(
            busy(&grants.decide(&claim("w2", Asks::Exclusive), now)),
            "a second writer waits too, without an entry"
        );
        assert_eq!(grants.entries.len(), 3, "r1, r2 and w's waiting entry");
        grants.release("r1", r1.token).unwrap();
        assert!(busy(&grants.decide(&claim("w", Asks::Exclusive), now)));
        grants.release("r2", r2.token).unwrap();
        let w = granted(grants.decide(&claim("w", Asks::Exclusive), now));
        assert_eq!(w.held, Held::Exclusive);
        assert_eq!(
            grants.entries.len(),
            1,
            "the waiting entry became the grant"
        );
        assert!(busy(&grants.decide(&claim("r3", Asks::Shared), now)));
        grants.release("w", w.token).unwrap();
        let r3 = granted(grants.decide(&claim("r3", Asks::Shared), now));
        assert!(r3.token > w.token && w.token > r2.token);
    }

    #[test]
    fn a_waiting_writer_refreshes_its_entry_once_a_third_of_its_ttl_and_not_on_every_attempt() {
        let (mut grants, now) = (Grants::default(), Instant::now());
        granted(grants.decide(&claim("r1", Asks::Shared), now));
        assert_eq!(
            grants.decide(&claim("w", Asks::Exclusive), now),
            Decision::Busy {
                retry_at: now + TTL / 3,
                changed: true
            }
        );
        let soon = now + Duration::from_secs(1);
        assert_eq!(
            grants.decide(&claim("w", Asks::Exclusive), soon),
            Decision::Busy {
                retry_at: now + TTL / 3,
                changed: false
            },
            "nothing to write a second later"
        );
        let due = now + TTL / 3;
        assert_eq!(
            grants.decide(&claim("w", Asks::Exclusive), due),
            Decision::Busy {
                retry_at: due + TTL / 3,
                changed: true
            }
        );
        let waiting = grants.entries.iter().find(|e| e.holder == "w").unwrap();
        assert_eq!((waiting.renewals, waiting.expires_at), (1, due + TTL));
    }

    #[test]
    fn a_writer_that_stops_refreshing_its_wait_no_longer_blocks_readers() {
        let (mut grants, now) = (Grants::default(), Instant::now());
        let r1 = granted(grants.decide(&claim("r1", Asks::Shared), now));
        assert!(busy(&grants.decide(&claim("w", Asks::Exclusive), now)));
        let later = now + TTL - Duration::from_millis(1);
        grants.renew("r1", r1.token, later).unwrap();
        assert!(busy(&grants.decide(&claim("r2", Asks::Shared), later)));
        let after = now + TTL;
        granted(grants.decide(&claim("r2", Asks::Shared), after));
        assert!(!grants.abandon("r2"), "r2 holds; it has no waiting entry");
    }

    #[test]
    fn only_the_holder_with_its_token_renews_or_releases() {
        let (mut grants, now) = (Grants::default(), Instant::now());
        let a = granted(grants.decide(&claim("a", Asks::Permit { permits: 2 }), now));
        assert_eq!(grants.renew("a", a.token + 1, now), Err(NotHolder));
        assert_eq!(grants.renew("b", a.token, now), Err(NotHolder));
        let later = now + Duration::from_secs(5);
        let renewed = grants.renew("a", a.token, later).unwrap();
        assert_eq!((renewed.renewals, renewed.expires_at), (1, later + TTL));
        assert_eq!(grants.release("b", a.token), Err(NotHolder));
        assert_eq!(grants.release("a", a.token), Ok(()));
        assert_eq!(grants.release("a", a.token), Err(NotHolder));
    }

    #[test]
    fn a_name_holds_at_most_max_entries() {
        let (mut grants, now) = (Grants::default(), Instant::now());
        let holders: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("r{i}")).collect();
        for holder in &holders[..MAX_ENTRIES] {
            granted(grants.decide(&claim(holder, Asks::Shared), now));
        }
        assert!(busy(
            &grants.decide(&claim(&holders[MAX_ENTRIES], Asks::Shared), now)
        ));
        let big = Asks::Permit { permits: 1000 };
        let mut semaphore = Grants::default();
        for holder in &holders[..MAX_ENTRIES] {
            granted(semaphore.decide(&claim(holder, big), now));
        }
        assert!(busy(
            &semaphore.decide(&claim(&holders[MAX_ENTRIES], big), now)
        ));
    }

    /// One step of a random history: a holder claims, renews, releases or gives up, or time moves.
    #[derive(Debug, Clone)]
    enum Step {
        Claim(usize, bool),
        Renew(usize),
        Release(usize),
        Abandon(usize),
        Sleep(u64),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            prop_oneof![
                3 => (0usize..6, any::<bool>()).prop_map(|(h, x)| Step::Claim(h, x)),
                2 => (0usize..6).prop_map(Step::Renew),
                2 => (0usize..6).prop_map(Step::Release),
                1 => (0usize..6).prop_map(Step::Abandon),
                2 => (0u64..20_000).prop_map(Step::Sleep),
            ],
            1..120,
        )
    }

    /// Replays `steps`, with holders asking for a semaphore of `permits` (or, with `None`, a
    /// read-write lock, exclusive when the step says so), and checks after every step what
    /// docs/semaphores.md promises.
    fn replay(permits: Option<u32>, steps: &[Step]) -> Result<(), TestCaseError> {
        let start = Instant::now();
        let mut now = start;
        let mut grants = Grants::default();
        let mut held: Vec<Option<u64>> = vec![None; 6];
        let mut last_token = 0;
        let holder = |h: usize| format!("h{h}");
        for step in steps {
            match *step {
                Step::Claim(h, exclusive) if held[h].is_none() => {
                    let asks = match permits {
                        Some(permits) => Asks::Permit { permits },
                        None if exclusive => Asks::Exclusive,
                        None => Asks::Shared,
                    };
                    let name = holder(h);
                    let live_before: Vec<Entry> = grants
                        .entries
                        .iter()
                        .filter(|e| e.live(now))
                        .cloned()
                        .collect();
                    let decision = grants.decide(&claim(&name, asks), now);
                    match decision {
                        Decision::Granted(entry) => {
                            prop_assert!(entry.token > last_token, "tokens only grow");
                            last_token = entry.token;
                            held[h] = Some(entry.token);
                            if asks == Asks::Shared {
                                prop_assert!(
                                    live_before
                                        .iter()
                                        .all(|e| e.holder == name || e.held == Held::Shared),
                                    "a reader entered beside a writer or a waiting writer"
                                );
                            }
                        }
                        Decision::Busy { retry_at, .. } => {
                            prop_assert!(retry_at > now);
                            prop_assert!(
                                !live_before.iter().all(|e| e.holder == name),
                                "a claim was refused though nothing else lived"
                            );
                        }
                        Decision::Conflict(_) => prop_assert!(false, "one kind only here"),
                    }
                }
                Step::Claim(..) => {}
                Step::Renew(h) => {
                    if let Some(token) = held[h]
                        && grants.renew(&holder(h), token, now).is_err()
                    {
                        held[h] = None;
                    }
                }
                Step::Release(h) => {
                    if let Some(token) = held[h].take() {
                        let _ = grants.release(&holder(h), token);
                    }
                }
                Step::Abandon(h) => {
                    grants.abandon(&holder(h));
                }
                Step::Sleep(ms) => now += Duration::from_millis(ms),
            }
            let live: Vec<&Entry> = grants.holders(now).collect();
            match permits {
                Some(permits) => {
                    prop_assert!(live.len() <= permits as usize, "more than N hold");
                    let mut used: Vec<Held> = live.iter().map(|e| e.held).collect();
                    used.sort_by_key(|h| format!("{h:?}"));
                    used.dedup();
                    prop_assert_eq!(used.len(), live.len(), "two hold one permit");
                }
                None => prop_assert!(
                    live.iter().all(|e| e.held == Held::Shared) || live.len() == 1,
                    "a writer beside another holder"
                ),
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn a_semaphore_never_has_more_than_n_holders(steps in steps(), permits in 1u32..4) {
            replay(Some(permits), &steps)?;
        }

        #[test]
        fn a_read_write_lock_never_has_a_writer_beside_anyone(steps in steps()) {
            replay(None, &steps)?;
        }
    }
}
