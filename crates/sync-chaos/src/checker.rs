//! The checker: reads the whole history of a run (every critical section, every write the
//! register decided, every fault) and finds what must never happen.
//!
//! Two grants *exclude* each other when they may not be held at once ([`Grant::excludes`]): any
//! two of a lock, two of one semaphore permit, an exclusive grant of a read-write lock with any
//! other. The checks below compare such pairs; for a lock, that is every pair. N+1 holders of a
//! semaphore's N permits are two holders of one permit, or a permit beyond N; a writer beside a
//! reader is an exclusive grant beside a shared one.
//!
//! - **Grants**: every grant is one the primitive makes (no permit beyond N, no shared grant of
//!   a lock).
//! - **Fencing**: the register never accepts a token lower than one it accepted before from an
//!   excluding grant (docs/semaphores.md, "Fencing tokens"), and no two holders ever carry the
//!   same token.
//! - **Token order**: tokens increase in the order excluding grants reached the workers.
//! - **Overlaps**: two excluding critical sections at once, by wall clock. Allowed only when the earlier
//!   holder was paused (SIGSTOP) past its lease, or had been told of its loss before the new grant
//!   (a worker leaves its section at its next check, after its sleep between writes); either way,
//!   none of its writes may be accepted after the new holder's first.
//! - **Told in time**: a holder that lost its lock heard so before anyone else took an excluding
//!   grant, unless it was paused (docs/timing.md, rule 3).
//! - **Recovery**: after each fault, the time with no holder at all, counted from when the fault healed
//!   (or the holder went, if later), stays within ttl plus the stated bound.
//! - **Liveness**: no worker waits longer than ttl plus the same bound while the lock is free or
//!   held only by dead holders (killed, or paused), outside faults that stop every waiter
//!   ([`Fault::halts_waiters`]). A waiter that is never woken fails it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::fence::{Admits, Grant};
use crate::history::{Section, Wait};
use crate::nemesis::{Fault, Injected};
use crate::register::Write;

/// What the checker found.
#[derive(Debug, Default, Serialize)]
pub struct Findings {
    /// Critical sections by how they ended.
    pub sections: BTreeMap<String, u64>,
    /// The most critical sections at once, by wall clock (for a semaphore, up to N; more only
    /// while a paused or told holder overlaps).
    pub max_holders: u64,
    /// Grants the primitive does not make (must be 0).
    pub foreign_grants: u64,
    /// Writes the register accepted.
    pub writes_accepted: u64,
    /// Writes the register refused for a stale token.
    pub writes_refused: u64,
    /// Accepted writes with a token lower than one accepted before (must be 0).
    pub fencing_violations: u64,
    /// Tokens held by two different sections (must be 0).
    pub duplicate_tokens: u64,
    /// Grants whose token is not above the previous grant's (must be 0).
    pub token_order_violations: u64,
    /// Overlapping pairs of critical sections.
    pub overlaps: u64,
    /// Overlaps whose earlier holder was paused past its lease.
    pub overlaps_paused: u64,
    /// Overlaps whose earlier holder, not paused, had been told of its loss before the next
    /// grant, and left its section at its next check.
    pub overlaps_told_first: u64,
    /// Writes an overlapping holder got accepted after the next holder's first write (must be 0).
    pub overlap_writes_accepted_late: u64,
    /// Writes an overlapping holder made after the next holder's first that fencing refused.
    pub overlap_writes_refused: u64,
    /// Sections that ended in a loss the worker was told of.
    pub lost_told: u64,
    /// ... of which the worker was told before the next holder acquired.
    pub lost_told_in_time: u64,
    /// ... told only after the next holder acquired, while paused (exempt).
    pub lost_told_late_paused: u64,
    /// The longest time with no holder after each kind of fault, in ms, counted from when the
    /// fault healed or the holder went, whichever was later.
    pub max_no_holder_ms: BTreeMap<String, u64>,
    /// The bound those must stay within: ttl plus the stated slack.
    pub no_holder_bound_ms: u64,
    /// Waits for the lock.
    pub waits: u64,
    /// The longest stretch any worker waited while the lock was free or held only by dead
    /// holders, outside faults that stop every waiter, in ms (bound: `no_holder_bound_ms`).
    pub max_wait_lock_free_ms: u64,
    /// Every failed check, in words.
    pub failures: Vec<String>,
}

impl Findings {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// What a run is judged by.
#[derive(Debug, Clone, Copy)]
pub struct Terms {
    /// The primitive the workers contended for.
    pub admits: Admits,
    /// The lock's ttl.
    pub ttl: Duration,
    /// How long past the ttl the store may stay without a holder after a fault heals.
    pub slack: Duration,
    /// When the run stopped, on the shared clock.
    pub end: u64,
}

/// Checks a run. `sections` and `waits` come from every worker; `writes` in the order the
/// register decided them.
pub fn check(
    sections: &[Section],
    waits: &[Wait],
    writes: &[Write],
    faults: &[Injected],
    terms: Terms,
) -> Findings {
    let Terms {
        admits,
        ttl,
        slack,
        end,
    } = terms;
    let mut f = Findings {
        no_holder_bound_ms: (ttl + slack).as_millis() as u64,
        ..Findings::default()
    };
    let mut sections: Vec<&Section> = sections.iter().collect();
    sections.sort_by_key(|s| s.acq);
    for s in &sections {
        let ending = serde_json::to_value(s.ending).unwrap_or_default();
        *f.sections
            .entry(ending.as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    grants(&mut f, admits, &sections);
    fencing(&mut f, writes, &sections);
    overlaps(&mut f, writes, faults, &sections);
    recovery(&mut f, faults, &sections, ttl + slack, end);
    liveness(&mut f, waits, faults, &sections, ttl + slack);
    f
}

fn paused(faults: &[Injected], worker: u32, from: u64, to: u64) -> bool {
    faults.iter().any(|x| {
        x.fault == Fault::PauseHolder && x.worker == Some(worker) && x.start < to && x.end > from
    })
}

/// Every grant one the primitive makes; the most sections at once.
fn grants(f: &mut Findings, admits: Admits, sections: &[&Section]) {
    for s in sections.iter().filter(|s| !admits.takes(s.grant)) {
        f.foreign_grants += 1;
        f.failures.push(format!(
            "grants: worker {} was granted {} (token {}) by a {admits}",
            s.worker, s.grant, s.token
        ));
    }
    let mut edges: Vec<(u64, i64)> = sections
        .iter()
        .flat_map(|s| [(s.acq, 1), (s.end, -1)])
        .collect();
    // An end and an acquire at one instant: the end first.
    edges.sort_unstable();
    let mut now = 0_i64;
    for (_, step) in edges {
        now += step;
        f.max_holders = f.max_holders.max(now as u64);
    }
}

/// The highest token in `highest` among the grants that exclude `grant`, with its owner.
fn outranking(highest: &BTreeMap<Grant, (u64, u32)>, grant: Grant) -> Option<(u64, u32)> {
    highest
        .iter()
        .filter(|(other, _)| grant.excludes(**other))
        .map(|(_, top)| *top)
        .max()
}

fn fencing(f: &mut Findings, writes: &[Write], sections: &[&Section]) {
    // The highest token accepted per grant (per permit, shared, exclusive, lock).
    let mut highest: BTreeMap<Grant, (u64, u32)> = BTreeMap::new();
    for w in writes {
        if !w.accepted {
            f.writes_refused += 1;
            continue;
        }
        f.writes_accepted += 1;
        match outranking(&highest, w.grant) {
            Some((token, _)) if w.token < token => {
                f.fencing_violations += 1;
                f.failures.push(format!(
                    "fencing: worker {} wrote as {} with token {} after token {token} was accepted",
                    w.worker, w.grant, w.token
                ));
            }
            Some((token, owner)) if w.token == token && w.worker != owner => {
                f.duplicate_tokens += 1;
                f.failures.push(format!(
                    "fencing: workers {owner} and {} both wrote with token {token}",
                    w.worker
                ));
            }
            _ => {}
        }
        let top = highest.entry(w.grant).or_insert((w.token, w.worker));
        if w.token > top.0 {
            *top = (w.token, w.worker);
        }
    }
    let mut by_token: BTreeMap<u64, u32> = BTreeMap::new();
    for s in sections {
        if let Some(other) = by_token.insert(s.token, s.worker) {
            f.duplicate_tokens += 1;
            f.failures.push(format!(
                "token {} was granted twice (workers {other} and {})",
                s.token, s.worker
            ));
        }
    }
    // In the order the grants reached the workers, the highest token so far per grant.
    let mut granted: BTreeMap<Grant, (u64, u32)> = BTreeMap::new();
    for s in sections {
        if let Some((token, worker)) = outranking(&granted, s.grant)
            && s.token <= token
        {
            f.token_order_violations += 1;
            f.failures.push(format!(
                "token order: worker {} got token {} ({}) after worker {worker} got token {token}",
                s.worker, s.token, s.grant
            ));
        }
        let top = granted.entry(s.grant).or_insert((s.token, s.worker));
        if s.token > top.0 {
            *top = (s.token, s.worker);
        }
    }
}

fn overlaps(f: &mut Findings, writes: &[Write], faults: &[Injected], sections: &[&Section]) {
    for (i, a) in sections.iter().enumerate() {
        let later = || {
            sections[i + 1..]
                .iter()
                .filter(move |b| a.grant.excludes(b.grant))
        };
        let next = later().next();
        if let (Some(told), Some(b)) = (a.told, next) {
            f.lost_told += 1;
            if told <= b.acq {
                f.lost_told_in_time += 1;
            } else if paused(faults, a.worker, a.acq, b.acq) {
                f.lost_told_late_paused += 1;
            } else {
                f.failures.push(format!(
                    "told late: worker {} (token {}) heard of its loss {:?} after worker {} \
                     acquired (token {})",
                    a.worker,
                    a.token,
                    Duration::from_nanos(told - b.acq),
                    b.worker,
                    b.token
                ));
            }
        }
        for b in later().take_while(|b| b.acq < a.end) {
            f.overlaps += 1;
            if paused(faults, a.worker, a.acq, b.acq) {
                f.overlaps_paused += 1;
            } else if a.told.is_some_and(|told| told <= b.acq) {
                f.overlaps_told_first += 1;
            } else {
                f.failures.push(format!(
                    "overlap: worker {} (token {}, {:?}) still held when worker {} acquired \
                     (token {}), and it was neither paused nor told",
                    a.worker, a.token, a.ending, b.worker, b.token
                ));
                continue;
            }
            let first_b = writes
                .iter()
                .find(|w| w.accepted && w.token == b.token)
                .map_or(u64::MAX, |w| w.at);
            for w in writes
                .iter()
                .filter(|w| w.worker == a.worker && w.token == a.token && w.at > first_b)
            {
                if w.accepted {
                    f.overlap_writes_accepted_late += 1;
                    f.failures.push(format!(
                        "fencing: overlapping worker {} got token {} accepted after token {}",
                        a.worker, a.token, b.token
                    ));
                } else {
                    f.overlap_writes_refused += 1;
                }
            }
        }
    }
}

fn recovery(
    f: &mut Findings,
    faults: &[Injected],
    sections: &[&Section],
    bound: Duration,
    end: u64,
) {
    // Times with no holder: between the union of the sections, and after the last one.
    let mut gaps = Vec::new();
    let mut covered_until: Option<u64> = None;
    for s in sections {
        if let Some(until) = covered_until
            && s.acq > until
        {
            gaps.push((until, s.acq));
        }
        covered_until = Some(covered_until.map_or(s.end, |u| u.max(s.end)));
    }
    if let Some(until) = covered_until
        && until < end
    {
        gaps.push((until, end));
    }
    for (from, to) in gaps {
        // Of the faults that struck before the gap ended, the one healed last: a fault that
        // strikes while the system is still recovering from another delays the recovery, so
        // the gap counts from the later heal and is put down to that fault.
        let cause = faults
            .iter()
            .filter(|x| x.start <= to)
            .max_by_key(|x| (x.end, x.start));
        let since = cause.map_or(from, |x| from.max(x.end));
        let waited = Duration::from_nanos(to.saturating_sub(since));
        let kind = cause.map_or_else(|| "none".to_owned(), |x| x.fault.name());
        let ms = waited.as_millis() as u64;
        let max = f.max_no_holder_ms.entry(kind.clone()).or_default();
        *max = (*max).max(ms);
        if waited > bound {
            f.failures.push(format!(
                "recovery: no holder for {waited:?} after {kind} (bound {bound:?})"
            ));
        }
    }
}

/// For every wait, the longest stretch with the lock free or held only by dead holders.
fn liveness(
    f: &mut Findings,
    waits: &[Wait],
    faults: &[Injected],
    sections: &[&Section],
    bound: Duration,
) {
    // When a live worker held the lock (a section, less the times its worker was paused), or a
    // fault kept every waiter waiting: sorted and merged.
    let mut blocked: Vec<(u64, u64)> = Vec::new();
    for s in sections {
        let mut from = s.acq;
        let mut pauses: Vec<&Injected> = faults
            .iter()
            .filter(|x| x.fault == Fault::PauseHolder && x.worker == Some(s.worker))
            .filter(|x| x.start < s.end && x.end > s.acq)
            .collect();
        pauses.sort_by_key(|x| x.start);
        for pause in pauses {
            blocked.push((from, pause.start.max(from)));
            from = from.max(pause.end);
        }
        blocked.push((from, s.end.max(from)));
    }
    blocked.extend(
        faults
            .iter()
            .filter(|x| x.fault.halts_waiters())
            .map(|x| (x.start, x.end)),
    );
    blocked.retain(|(from, to)| to > from);
    blocked.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (from, to) in blocked {
        match merged.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    f.waits = waits.len() as u64;
    for w in waits {
        let longest = longest_gap(&merged, w.from, w.to);
        let ms = longest.as_millis() as u64;
        f.max_wait_lock_free_ms = f.max_wait_lock_free_ms.max(ms);
        if longest > bound {
            f.failures.push(format!(
                "liveness: worker {} waited {longest:?} with the lock free or held only by dead \
                 holders (bound {bound:?})",
                w.worker
            ));
        }
    }
}

/// The longest stretch of `[from, to]` outside every interval of `merged` (sorted, disjoint).
fn longest_gap(merged: &[(u64, u64)], from: u64, to: u64) -> Duration {
    let first = merged.partition_point(|(_, end)| *end <= from);
    let (mut longest, mut at) = (0, from);
    for (start, end) in merged[first..].iter().take_while(|(start, _)| *start < to) {
        longest = longest.max(start.saturating_sub(at));
        at = at.max(*end);
    }
    longest = longest.max(to.saturating_sub(at));
    Duration::from_nanos(longest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Ending;

    const MS: u64 = 1_000_000;

    fn section(worker: u32, token: u64, acq: u64, end: u64, ending: Ending) -> Section {
        held(Grant::Lock, worker, token, acq, end, ending)
    }

    /// A section holding `grant`.
    fn held(grant: Grant, worker: u32, token: u64, acq: u64, end: u64, ending: Ending) -> Section {
        Section {
            worker,
            token,
            grant,
            acq: acq * MS,
            end: end * MS,
            ending,
            told: (ending == Ending::Lost).then_some(end * MS),
        }
    }

    fn write(at: u64, worker: u32, token: u64, accepted: bool) -> Write {
        wrote(Grant::Lock, at, worker, token, accepted)
    }

    fn wrote(grant: Grant, at: u64, worker: u32, token: u64, accepted: bool) -> Write {
        Write {
            at: at * MS,
            worker,
            token,
            grant,
            seq: 1,
            accepted,
        }
    }

    fn pause(worker: u32, start: u64, end: u64) -> Injected {
        Injected {
            worker: Some(worker),
            ..outage(Fault::PauseHolder, start, end)
        }
    }

    /// A fault of no worker or pod, from `start` to `end` ms.
    fn outage(fault: Fault, start: u64, end: u64) -> Injected {
        Injected {
            fault,
            start: start * MS,
            end: end * MS,
            worker: None,
            pod: None,
        }
    }

    fn run(sections: &[Section], writes: &[Write], faults: &[Injected]) -> Findings {
        run_with_waits(sections, &[], writes, faults)
    }

    fn run_with_waits(
        sections: &[Section],
        waits: &[Wait],
        writes: &[Write],
        faults: &[Injected],
    ) -> Findings {
        run_on(Admits::One, sections, waits, writes, faults)
    }

    fn run_on(
        admits: Admits,
        sections: &[Section],
        waits: &[Wait],
        writes: &[Write],
        faults: &[Injected],
    ) -> Findings {
        let terms = Terms {
            admits,
            ttl: Duration::from_secs(3),
            slack: Duration::from_secs(5),
            end: 20_000 * MS,
        };
        check(sections, waits, writes, faults, terms)
    }

    #[test]
    fn n_holders_of_a_semaphore_pass_and_two_on_one_permit_fail() {
        let two = Admits::Permits(2);
        let sections = [
            held(Grant::Permit(0), 1, 10, 0, 1_000, Ending::Released),
            held(Grant::Permit(1), 2, 11, 100, 20_000, Ending::Open),
            held(Grant::Permit(0), 3, 12, 1_001, 20_000, Ending::Open),
        ];
        let writes = [
            wrote(Grant::Permit(0), 1, 1, 10, true),
            wrote(Grant::Permit(1), 101, 2, 11, true),
            // Permit 0's older token still writes after permit 1's newer one: no violation.
            wrote(Grant::Permit(0), 200, 1, 10, true),
            wrote(Grant::Permit(0), 1_002, 3, 12, true),
        ];
        let f = run_on(two, &sections, &[], &writes, &[]);
        assert!(f.passed(), "{:?}", f.failures);
        assert_eq!((f.max_holders, f.overlaps), (2, 0));

        // A third holder: on a permit already held, or on a permit beyond N.
        let mut crowded = sections.to_vec();
        crowded.push(held(Grant::Permit(1), 4, 13, 500, 20_000, Ending::Open));
        let f = run_on(two, &crowded, &[], &writes, &[]);
        assert_eq!((f.max_holders, f.overlaps), (3, 1));
        assert!(
            f.failures.iter().any(|m| m.starts_with("overlap")),
            "{:?}",
            f.failures
        );
        let mut beyond = sections.to_vec();
        beyond.push(held(Grant::Permit(2), 4, 13, 500, 20_000, Ending::Open));
        let f = run_on(two, &beyond, &[], &writes, &[]);
        assert_eq!(f.foreign_grants, 1);
        assert!(!f.passed());

        // A permit's stale token accepted after its newer one.
        let mut stale = writes.to_vec();
        stale.push(wrote(Grant::Permit(0), 1_100, 1, 10, true));
        let f = run_on(two, &sections, &[], &stale, &[]);
        assert_eq!(f.fencing_violations, 1);
    }

    #[test]
    fn readers_share_but_a_writer_beside_a_reader_fails() {
        let rw = Admits::SharedOrExclusive;
        let readers = [
            held(Grant::Shared, 1, 10, 0, 1_000, Ending::Released),
            held(Grant::Shared, 2, 11, 100, 1_100, Ending::Released),
            held(Grant::Exclusive, 3, 12, 1_200, 20_000, Ending::Open),
        ];
        let writes = [
            wrote(Grant::Shared, 1, 1, 10, true),
            wrote(Grant::Shared, 101, 2, 11, true),
            // Readers do not fence readers.
            wrote(Grant::Shared, 200, 1, 10, true),
            wrote(Grant::Exclusive, 1_201, 3, 12, true),
        ];
        let f = run_on(rw, &readers, &[], &writes, &[]);
        assert!(f.passed(), "{:?}", f.failures);
        assert_eq!(f.max_holders, 2);

        let mut early = readers.to_vec();
        early[2] = held(Grant::Exclusive, 3, 12, 900, 20_000, Ending::Open);
        let f = run_on(rw, &early, &[], &writes, &[]);
        assert_eq!(f.overlaps, 2, "the writer beside both readers");
        assert!(!f.passed());

        // A reader's write accepted below the writer's token.
        let mut stale = writes.to_vec();
        stale.push(wrote(Grant::Shared, 1_300, 2, 11, true));
        let f = run_on(rw, &readers, &[], &stale, &[]);
        assert_eq!(f.fencing_violations, 1);

        // A lock's grant in a read-write run.
        let mut foreign = readers.to_vec();
        foreign.push(held(Grant::Lock, 4, 13, 30, 40, Ending::Released));
        assert_eq!(run_on(rw, &foreign, &[], &writes, &[]).foreign_grants, 1);
    }

    #[test]
    fn a_clean_hand_over_passes() {
        let sections = [
            section(1, 10, 0, 100, Ending::Released),
            section(2, 11, 101, 20_000, Ending::Open),
        ];
        let writes = [write(1, 1, 10, true), write(102, 2, 11, true)];
        let f = run(&sections, &writes, &[]);
        assert!(f.passed(), "{:?}", f.failures);
        assert_eq!(f.writes_accepted, 2);
    }

    #[test]
    fn an_overlap_without_a_pause_fails() {
        let sections = [
            section(1, 10, 0, 500, Ending::Lost),
            section(2, 11, 400, 20_000, Ending::Open),
        ];
        let f = run(&sections, &[], &[]);
        assert_eq!(f.overlaps, 1);
        assert!(
            f.failures.iter().any(|m| m.starts_with("overlap")),
            "{:?}",
            f.failures
        );
        assert!(
            f.failures.iter().any(|m| m.starts_with("told late")),
            "{:?}",
            f.failures
        );
    }

    #[test]
    fn a_paused_holder_may_overlap_but_not_write_after_the_next_holder() {
        let sections = [
            section(1, 10, 0, 5_000, Ending::Lost),
            section(2, 11, 3_500, 20_000, Ending::Open),
        ];
        let faults = [pause(1, 100, 4_600)];
        let refused = [
            write(50, 1, 10, true),
            write(3_501, 2, 11, true),
            write(4_700, 1, 10, false),
        ];
        let f = run(&sections, &refused, &faults);
        assert!(f.passed(), "{:?}", f.failures);
        assert_eq!((f.overlaps_paused, f.overlap_writes_refused), (1, 1));
        assert_eq!(f.lost_told_late_paused, 1);

        let accepted = [
            write(50, 1, 10, true),
            write(3_501, 2, 11, true),
            write(4_700, 1, 10, true),
        ];
        let f = run(&sections, &accepted, &faults);
        assert_eq!(f.fencing_violations, 1);
        assert_eq!(f.overlap_writes_accepted_late, 1);
    }

    #[test]
    fn duplicate_and_out_of_order_tokens_fail() {
        let sections = [
            section(1, 10, 0, 100, Ending::Released),
            section(2, 10, 200, 300, Ending::Released),
            section(3, 9, 400, 20_000, Ending::Open),
        ];
        let f = run(
            &sections,
            &[write(1, 1, 10, true), write(201, 2, 10, true)],
            &[],
        );
        assert_eq!(f.duplicate_tokens, 2);
        assert_eq!(f.token_order_violations, 2);
    }

    #[test]
    fn a_long_time_without_a_holder_after_a_fault_fails() {
        let sections = [
            section(1, 10, 0, 100, Ending::Killed),
            section(2, 11, 9_200, 20_000, Ending::Open),
        ];
        let faults = [Injected {
            pod: Some(0),
            ..outage(Fault::KillElector, 100, 1_100)
        }];
        let f = run(&sections, &[], &faults);
        assert_eq!(f.max_no_holder_ms["kill-elector"], 8_100);
        assert!(
            f.failures.iter().any(|m| m.starts_with("recovery")),
            "{:?}",
            f.failures
        );
    }

    fn wait(worker: u32, from: u64, to: u64) -> Wait {
        Wait {
            worker,
            from: from * MS,
            to: to * MS,
        }
    }

    fn liveness_failures(f: &Findings) -> usize {
        f.failures
            .iter()
            .filter(|m| m.starts_with("liveness"))
            .count()
    }

    #[test]
    fn a_waiter_behind_live_holders_is_not_starved() {
        let sections = [
            section(1, 10, 0, 9_000, Ending::Released),
            section(2, 11, 9_001, 20_000, Ending::Open),
        ];
        let f = run_with_waits(&sections, &[wait(2, 10, 9_001)], &[], &[]);
        assert_eq!(liveness_failures(&f), 0, "{:?}", f.failures);
        assert_eq!(
            (f.waits, f.max_wait_lock_free_ms),
            (1, 1),
            "the hand-over's 1 ms"
        );
    }

    #[test]
    fn a_waiter_left_asleep_behind_a_free_lock_fails() {
        let sections = [
            section(1, 10, 0, 100, Ending::Released),
            section(2, 11, 9_000, 20_000, Ending::Open),
        ];
        let f = run_with_waits(&sections, &[wait(2, 50, 9_000)], &[], &[]);
        assert_eq!(f.max_wait_lock_free_ms, 8_900);
        assert_eq!(liveness_failures(&f), 1, "{:?}", f.failures);
    }

    #[test]
    fn a_paused_holder_counts_as_dead_and_store_outages_do_not_count() {
        // Holder 1 paused from 100 ms: the lock is held only by a dead holder from then on.
        let sections = [
            section(1, 10, 0, 9_500, Ending::Lost),
            section(2, 11, 9_000, 20_000, Ending::Open),
        ];
        let f = run_with_waits(
            &sections,
            &[wait(2, 50, 9_000)],
            &[],
            &[pause(1, 100, 9_400)],
        );
        assert_eq!(f.max_wait_lock_free_ms, 8_900);
        assert_eq!(liveness_failures(&f), 1, "{:?}", f.failures);
        // The same wait with the store down for everyone from 100 to 5,000 ms: 4 s counted.
        let f = run_with_waits(
            &sections,
            &[wait(2, 50, 9_000)],
            &[],
            &[pause(1, 100, 9_400), outage(Fault::ApiErrors, 100, 5_000)],
        );
        assert_eq!(f.max_wait_lock_free_ms, 4_000);
        assert_eq!(liveness_failures(&f), 0, "{:?}", f.failures);
    }

    #[test]
    fn a_holder_told_before_the_next_grant_may_leave_its_section_late_but_not_write() {
        // Told at 900 ms, the next grant at 1,000 ms, the worker's END at 1,002 ms.
        let mut told = section(1, 10, 0, 1_002, Ending::Lost);
        told.told = Some(900 * MS);
        let sections = [told, section(2, 11, 1_000, 20_000, Ending::Open)];
        let clean = [write(800, 1, 10, true), write(1_001, 2, 11, true)];
        let f = run(&sections, &clean, &[]);
        assert!(f.passed(), "{:?}", f.failures);
        assert_eq!((f.overlaps, f.overlaps_told_first), (1, 1));

        let late = [
            write(800, 1, 10, true),
            write(1_001, 2, 11, true),
            write(1_002, 1, 10, true),
        ];
        let f = run(&sections, &late, &[]);
        assert_eq!(f.overlap_writes_accepted_late, 1, "{:?}", f.failures);
        assert!(!f.passed());
    }

    #[test]
    fn a_gap_across_two_faults_counts_from_the_later_heal() {
        let sections = [
            section(1, 10, 0, 200, Ending::Released),
            section(2, 11, 11_500, 20_000, Ending::Open),
        ];
        let faults = [
            outage(Fault::EtcdQuorumLoss, 100, 3_000),
            outage(Fault::EtcdLeaderKill, 5_000, 8_000),
        ];
        let f = run(&sections, &[], &faults);
        assert!(f.passed(), "{:?}", f.failures);
        assert_eq!(f.max_no_holder_ms["etcd-leader-kill"], 3_500);
        assert!(!f.max_no_holder_ms.contains_key("etcd-quorum-loss"));
    }
}
