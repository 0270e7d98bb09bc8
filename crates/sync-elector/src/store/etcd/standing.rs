//! Where a claim on a semaphore or read-write lock stands in its etcd line, without I/O
//! (docs/semaphores.md, "etcd: keys ordered by revision"): from one read of every claim key of
//! the name, oldest first, whether it may take its grant, which older keys it waits for, or
//! whether the name is of another kind.
//!
//! - The oldest key's kind is the name's kind; a claim of another kind is a conflict.
//! - A semaphore's claim among the N oldest takes a permit ([`lowest_free_permit`]).
//! - A shared claim is granted when no exclusive claim is older than it; an exclusive claim
//!   when no claim is.
//! - A waiter is woken by the deletion of any key that stands in its way, then reads the whole
//!   line again and decides from that read alone; it never concludes from the event that it now
//!   holds (the lesson of etcd-io/etcd#16221, where a writer did).

use crate::store::grants::{Asks, Conflict, Kind};

/// One claim key of the line, as its value describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Claimed<'a> {
    /// The key.
    pub key: &'a str,
    /// What it asks for; `None` for a lock's claim.
    pub asks: Option<Asks>,
}

fn kind_of(asks: Option<Asks>) -> Kind {
    asks.map_or(Kind::Lock, Asks::kind)
}

/// How a claim key's value names what it asks for: `permits=N`, `shared` or `exclusive`.
pub(super) fn asks_text(asks: Asks) -> String {
    match asks {
        Asks::Permit { permits } => format!("permits={permits}"),
        Asks::Shared => "shared".into(),
        Asks::Exclusive => "exclusive".into(),
    }
}

/// What a claim key's value asks for; `None` for a lock's claim, or a value this store did not
/// write (counted as a lock's, which conflicts with every other kind).
pub(super) fn asks_of(text: Option<&str>) -> Option<Asks> {
    match text? {
        "shared" => Some(Asks::Shared),
        "exclusive" => Some(Asks::Exclusive),
        other => other
            .strip_prefix("permits=")
            .and_then(|n| n.parse().ok())
            .map(|permits| Asks::Permit { permits }),
    }
}

/// The last part of a semaphore's permit key: `permit-{n}`, beside the claims'
/// `{lease}-{n}` under the name's prefix.
pub(super) fn permit_suffix(permit: u32) -> String {
    format!("permit-{permit}")
}

/// The permit a key's last part names, if it is a permit key.
pub(super) fn permit_of(suffix: &str) -> Option<u32> {
    suffix.strip_prefix("permit-")?.parse().ok()
}

/// Where the claim with `key` stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Standing<'a> {
    /// It may take its grant now (a semaphore's claim: once it has a permit).
    Eligible,
    /// It waits; the deletion of any of these older keys may change that.
    Behind(Vec<&'a str>),
    /// The name is another kind than the claim asks for: it must leave the line.
    Conflict(Conflict),
    /// Its key is not in the line (its lease ran out): it must queue again.
    Gone,
}

/// Where the claim with `key`, asking for `asks`, stands in `line` (every claim key of one name,
/// by create revision).
pub(super) fn standing<'a>(line: &[Claimed<'a>], key: &str, asks: Asks) -> Standing<'a> {
    let Some(at) = line.iter().position(|c| c.key == key) else {
        return Standing::Gone;
    };
    let is = kind_of(line[0].asks);
    if is != asks.kind() {
        return Standing::Conflict(Conflict {
            is,
            asked: asks.kind(),
        });
    }
    let older = &line[..at];
    let in_the_way: Vec<&'a str> = match asks {
        Asks::Permit { permits } if at < permits as usize => Vec::new(),
        Asks::Permit { .. } => older.iter().map(|c| c.key).collect(),
        Asks::Shared => older
            .iter()
            .filter(|c| c.asks == Some(Asks::Exclusive))
            .map(|c| c.key)
            .collect(),
        Asks::Exclusive => older.iter().map(|c| c.key).collect(),
    };
    if in_the_way.is_empty() {
        Standing::Eligible
    } else {
        Standing::Behind(in_the_way)
    }
}

/// The lowest permit of `permits` not in `taken`, the permits whose keys exist. `None` only if
/// all are taken, which a claim among the N oldest never finds: each permit key belongs to a
/// claim older than it or to itself, and goes with its claim.
pub(super) fn lowest_free_permit(permits: u32, taken: &[u32]) -> Option<u32> {
    (0..permits).find(|p| !taken.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(claims: &[(&'a str, Option<Asks>)]) -> Vec<Claimed<'a>> {
        claims
            .iter()
            .map(|&(key, asks)| Claimed { key, asks })
            .collect()
    }

    const SHARED: Option<Asks> = Some(Asks::Shared);
    const EXCLUSIVE: Option<Asks> = Some(Asks::Exclusive);

    #[test]
    fn a_semaphore_s_n_oldest_claims_are_eligible_and_the_rest_wait_for_any_older_key() {
        let two = Asks::Permit { permits: 2 };
        let line = line(&[("a", Some(two)), ("b", Some(two)), ("c", Some(two))]);
        assert_eq!(standing(&line, "a", two), Standing::Eligible);
        assert_eq!(standing(&line, "b", two), Standing::Eligible);
        assert_eq!(standing(&line, "c", two), Standing::Behind(vec!["a", "b"]));
        assert_eq!(standing(&line, "d", two), Standing::Gone);
        assert_eq!(lowest_free_permit(2, &[0]), Some(1));
        assert_eq!(lowest_free_permit(3, &[2, 0]), Some(1));
        assert_eq!(lowest_free_permit(2, &[1, 0]), None);
        assert_eq!(permit_of(&permit_suffix(7)), Some(7));
        assert_eq!(permit_of("0000000000000001-2a"), None, "a claim key");
        for asks in [two, Asks::Shared, Asks::Exclusive] {
            assert_eq!(asks_of(Some(&asks_text(asks))), Some(asks));
        }
        assert_eq!(asks_of(None), None, "a lock's claim");
    }

    #[test]
    fn readers_wait_only_for_older_writers_and_a_writer_for_everyone_older() {
        let line = line(&[
            ("r1", SHARED),
            ("r2", SHARED),
            ("w1", EXCLUSIVE),
            ("r3", SHARED),
            ("w2", EXCLUSIVE),
        ]);
        assert_eq!(standing(&line, "r1", Asks::Shared), Standing::Eligible);
        assert_eq!(standing(&line, "r2", Asks::Shared), Standing::Eligible);
        assert_eq!(
            standing(&line, "w1", Asks::Exclusive),
            Standing::Behind(vec!["r1", "r2"])
        );
        assert_eq!(
            standing(&line, "r3", Asks::Shared),
            Standing::Behind(vec!["w1"]),
            "a reader after a waiting writer waits for it: writers are not starved"
        );
        assert_eq!(
            standing(&line, "w2", Asks::Exclusive),
            Standing::Behind(vec!["r1", "r2", "w1", "r3"])
        );
    }

    #[test]
    fn a_writer_whose_predecessor_vanished_still_waits_for_an_older_writer() {
        // etcd-io/etcd#16221: w1 holds, w2 waits behind it, w3 behind w2; w2's session is
        // revoked. The recipe woke w3 on w2's deletion and let it in beside w1.
        let before = line(&[("w1", EXCLUSIVE), ("w2", EXCLUSIVE), ("w3", EXCLUSIVE)]);
        assert_eq!(
            standing(&before, "w3", Asks::Exclusive),
            Standing::Behind(vec!["w1", "w2"])
        );
        let after = line(&[("w1", EXCLUSIVE), ("w3", EXCLUSIVE)]);
        assert_eq!(
            standing(&after, "w3", Asks::Exclusive),
            Standing::Behind(vec!["w1"])
        );
    }

    #[test]
    fn the_oldest_key_sets_the_kind() {
        let three = Asks::Permit { permits: 3 };
        let line = line(&[("lock", None), ("s", Some(three)), ("r", SHARED)]);
        assert_eq!(
            standing(&line, "s", three),
            Standing::Conflict(Conflict {
                is: Kind::Lock,
                asked: Kind::Semaphore { permits: 3 }
            })
        );
        let Standing::Conflict(conflict) = standing(&line, "r", Asks::Shared) else {
            panic!()
        };
        assert_eq!(
            conflict.to_string(),
            "it is a lock; this request asks for a read-write lock"
        );
    }
}
