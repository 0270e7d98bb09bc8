//! The fencing rules a protected resource applies, for locks, semaphores and read-write locks
//! (docs/semaphores.md, "Fencing tokens"), without I/O: which writes it accepts, and which it
//! refuses as coming from a holder whose grant has been superseded.

use std::collections::BTreeMap;
use std::fmt;

/// What the holder behind a write says it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Grant {
    /// A lock.
    Lock,
    /// A semaphore's permit, 0 to N-1.
    Permit(u32),
    /// A read-write lock, shared.
    Shared,
    /// A read-write lock, exclusive.
    Exclusive,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lock => f.write_str("lock"),
            Self::Permit(permit) => write!(f, "permit={permit}"),
            Self::Shared => f.write_str("shared"),
            Self::Exclusive => f.write_str("exclusive"),
        }
    }
}

impl std::str::FromStr for Grant {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "lock" => Ok(Self::Lock),
            "shared" => Ok(Self::Shared),
            "exclusive" => Ok(Self::Exclusive),
            _ => text
                .strip_prefix("permit=")
                .and_then(|permit| permit.parse().ok())
                .map(Self::Permit)
                .ok_or_else(|| {
                    format!("expected lock, permit=<n>, shared or exclusive, got {text:?}")
                }),
        }
    }
}

impl Grant {
    /// Whether `self` and `other` may not be held at once: any two grants of a lock, two of one
    /// permit, and an exclusive grant with anything. Such grants supersede one another, so the
    /// later one's token fences the earlier one's writes.
    pub fn excludes(self, other: Grant) -> bool {
        match (self, other) {
            (Self::Permit(a), Self::Permit(b)) => a == b,
            (Self::Shared, Self::Shared) => false,
            _ => true,
        }
    }
}

/// Which primitive protects the resource, and so which grants it takes. Written `lock`,
/// `semaphore=<n>` or `rwlock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(into = "String")]
pub enum Admits {
    /// One holder: a lock.
    One,
    /// A semaphore of this many permits.
    Permits(u32),
    /// A read-write lock: shared holders, or one exclusive holder.
    SharedOrExclusive,
}

impl Admits {
    /// Whether this primitive grants `grant` at all.
    pub fn takes(self, grant: Grant) -> bool {
        match (self, grant) {
            (Self::One, Grant::Lock)
            | (Self::SharedOrExclusive, Grant::Shared | Grant::Exclusive) => true,
            (Self::Permits(n), Grant::Permit(permit)) => permit < n,
            _ => false,
        }
    }
}

impl fmt::Display for Admits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::One => f.write_str("lock"),
            Self::Permits(n) => write!(f, "semaphore={n}"),
            Self::SharedOrExclusive => f.write_str("rwlock"),
        }
    }
}

impl From<Admits> for String {
    fn from(admits: Admits) -> Self {
        admits.to_string()
    }
}

impl std::str::FromStr for Admits {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "lock" => Ok(Self::One),
            "rwlock" => Ok(Self::SharedOrExclusive),
            _ => text
                .strip_prefix("semaphore=")
                .and_then(|n| n.parse().ok())
                .filter(|n| (1..=sync_client::MAX_PERMITS).contains(n))
                .map(Self::Permits)
                .ok_or_else(|| {
                    format!("expected lock, semaphore=<1 to 128> or rwlock, got {text:?}")
                }),
        }
    }
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The write's token is below `highest`, the highest token the rule compares it with: its
    /// grant has been superseded.
    Stale {
        /// The token that outranks it.
        highest: u64,
    },
    /// The grant is not one this resource takes (another primitive, or a permit beyond N).
    Foreign(Grant),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stale { highest } => write!(f, "STALE {highest}"),
            Self::Foreign(grant) => write!(f, "FOREIGN {grant}"),
        }
    }
}

/// The resource's memory of the tokens it accepted, and its rule.
#[derive(Debug, Clone)]
pub struct Fence {
    admits: Admits,
    /// The highest token accepted from any grant.
    highest: u64,
    /// The highest token accepted from an exclusive grant.
    highest_exclusive: u64,
    /// The highest token accepted per permit.
    per_permit: BTreeMap<u32, u64>,
}

impl Fence {
    /// A resource that has accepted nothing yet.
    pub fn new(admits: Admits) -> Self {
        Self {
            admits,
            highest: 0,
            highest_exclusive: 0,
            per_permit: BTreeMap::new(),
        }
    }

    /// Decides a write by the holder of `grant` with `token`, and remembers it if accepted.
    pub fn admit(&mut self, grant: Grant, token: u64) -> Result<(), Refusal> {
        if !self.admits.takes(grant) {
            return Err(Refusal::Foreign(grant));
        }
        let outranked_by = match grant {
            Grant::Lock | Grant::Exclusive => self.highest,
            Grant::Permit(permit) => self.per_permit.get(&permit).copied().unwrap_or(0),
            Grant::Shared => self.highest_exclusive,
        };
        if token < outranked_by {
            return Err(Refusal::Stale {
                highest: outranked_by,
            });
        }
        self.highest = self.highest.max(token);
        match grant {
            Grant::Exclusive => self.highest_exclusive = self.highest_exclusive.max(token),
            Grant::Permit(permit) => {
                let highest = self.per_permit.entry(permit).or_default();
                *highest = (*highest).max(token);
            }
            Grant::Lock | Grant::Shared => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_lock_refuses_a_token_below_the_highest_accepted() {
        let mut fence = Fence::new(Admits::One);
        assert_eq!(fence.admit(Grant::Lock, 5), Ok(()));
        assert_eq!(fence.admit(Grant::Lock, 7), Ok(()));
        assert_eq!(
            fence.admit(Grant::Lock, 5),
            Err(Refusal::Stale { highest: 7 })
        );
        assert_eq!(fence.admit(Grant::Lock, 7), Ok(()));
    }

    #[test]
    fn a_semaphore_compares_tokens_per_permit_so_an_older_live_permit_still_writes() {
        let mut fence = Fence::new(Admits::Permits(2));
        assert_eq!(fence.admit(Grant::Permit(0), 1), Ok(()));
        assert_eq!(fence.admit(Grant::Permit(1), 2), Ok(()));
        // "Below the highest accepted" would refuse this live holder.
        assert_eq!(fence.admit(Grant::Permit(0), 1), Ok(()));
        assert_eq!(fence.admit(Grant::Permit(0), 3), Ok(()));
        assert_eq!(
            fence.admit(Grant::Permit(0), 1),
            Err(Refusal::Stale { highest: 3 })
        );
        assert_eq!(
            fence.admit(Grant::Permit(2), 9),
            Err(Refusal::Foreign(Grant::Permit(2)))
        );
    }

    #[test]
    fn readers_are_refused_below_the_last_writer_and_a_writer_below_anyone() {
        let mut fence = Fence::new(Admits::SharedOrExclusive);
        assert_eq!(fence.admit(Grant::Shared, 2), Ok(()));
        assert_eq!(fence.admit(Grant::Shared, 3), Ok(()));
        assert_eq!(
            fence.admit(Grant::Shared, 2),
            Ok(()),
            "readers do not fence readers"
        );
        assert_eq!(
            fence.admit(Grant::Exclusive, 1),
            Err(Refusal::Stale { highest: 3 })
        );
        assert_eq!(fence.admit(Grant::Exclusive, 4), Ok(()));
        assert_eq!(
            fence.admit(Grant::Shared, 3),
            Err(Refusal::Stale { highest: 4 })
        );
        assert_eq!(fence.admit(Grant::Shared, 5), Ok(()));
        assert_eq!(
            fence.admit(Grant::Lock, 9),
            Err(Refusal::Foreign(Grant::Lock))
        );
    }

    #[test]
    fn primitives_read_back_as_written_and_say_what_excludes_what() {
        for admits in [Admits::One, Admits::Permits(3), Admits::SharedOrExclusive] {
            assert_eq!(admits.to_string().parse(), Ok(admits));
        }
        for bad in ["semaphore=0", "semaphore=129", "semaphore", "mutex"] {
            assert!(bad.parse::<Admits>().is_err(), "{bad}");
        }
        assert!(Grant::Lock.excludes(Grant::Lock));
        assert!(Grant::Permit(1).excludes(Grant::Permit(1)));
        assert!(!Grant::Permit(1).excludes(Grant::Permit(2)));
        assert!(!Grant::Shared.excludes(Grant::Shared));
        assert!(Grant::Shared.excludes(Grant::Exclusive));
        assert!(Grant::Exclusive.excludes(Grant::Shared));
        assert!(Admits::Permits(2).takes(Grant::Permit(1)));
        assert!(!Admits::Permits(2).takes(Grant::Permit(2)));
        assert!(!Admits::One.takes(Grant::Shared));
    }

    #[test]
    fn grants_read_back_as_written() {
        for grant in [
            Grant::Lock,
            Grant::Permit(0),
            Grant::Permit(41),
            Grant::Shared,
            Grant::Exclusive,
        ] {
            assert_eq!(grant.to_string().parse::<Grant>(), Ok(grant));
        }
        assert!("permit=x".parse::<Grant>().is_err());
        assert!("writer".parse::<Grant>().is_err());
    }

    /// A model of the store's side: grants made by the primitive's own rule from a counter, and
    /// ended (released, or expired without the holder knowing) at random; holders write whether
    /// or not their grant still lives.
    #[derive(Debug, Clone)]
    enum Step {
        /// Ask for a grant of this shape (a permit's number, or shared when `true`); made only
        /// if the primitive allows it now.
        Ask(u32, bool),
        /// End the grant with this index (modulo the grants made so far).
        End(usize),
        /// The holder of the grant with this index writes.
        Write(usize),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            prop_oneof![
                (0u32..4, any::<bool>()).prop_map(|(p, s)| Step::Ask(p, s)),
                any::<usize>().prop_map(Step::End),
                any::<usize>().prop_map(Step::Write),
                any::<usize>().prop_map(Step::Write),
            ],
            1..80,
        )
    }

    struct Made {
        grant: Grant,
        token: u64,
        live: bool,
        /// Whether an accepted write of this grant happened.
        wrote: bool,
    }

    /// Whether the primitive may grant `grant` while `made` are the grants so far.
    fn allowed(admits: Admits, grant: Grant, made: &[Made]) -> bool {
        let mut live = made.iter().filter(|m| m.live);
        match (admits, grant) {
            (Admits::One, _) => live.next().is_none(),
            (Admits::Permits(_), Grant::Permit(p)) => live.all(|m| m.grant != Grant::Permit(p)),
            (_, Grant::Shared) => live.all(|m| m.grant != Grant::Exclusive),
            _ => live.next().is_none(),
        }
    }

    /// Whether `later`, made after `earlier`, supersedes it for the resource: they could not
    /// both live at once.
    fn supersedes(later: Grant, earlier: Grant) -> bool {
        let both_shared = later == Grant::Shared && earlier == Grant::Shared;
        let other_permits =
            matches!((later, earlier), (Grant::Permit(a), Grant::Permit(b)) if a != b);
        !(both_shared || other_permits)
    }

    fn replay(admits: Admits, steps: &[Step]) -> Result<(), TestCaseError> {
        let mut fence = Fence::new(admits);
        let mut made: Vec<Made> = Vec::new();
        let mut counter = 0;
        for step in steps {
            match *step {
                Step::Ask(p, shared) => {
                    let grant = match admits {
                        Admits::One => Grant::Lock,
                        Admits::Permits(n) => Grant::Permit(p % n),
                        Admits::SharedOrExclusive if shared => Grant::Shared,
                        Admits::SharedOrExclusive => Grant::Exclusive,
                    };
                    if allowed(admits, grant, &made) {
                        counter += 1;
                        made.push(Made {
                            grant,
                            token: counter,
                            live: true,
                            wrote: false,
                        });
                    }
                }
                Step::End(i) if !made.is_empty() => {
                    let n = made.len();
                    made[i % n].live = false;
                }
                Step::Write(i) if !made.is_empty() => {
                    let i = i % made.len();
                    let (grant, token, live) = (made[i].grant, made[i].token, made[i].live);
                    let superseded = made[i + 1..]
                        .iter()
                        .any(|later| later.wrote && supersedes(later.grant, grant));
                    let decided = fence.admit(grant, token);
                    if live {
                        prop_assert_eq!(&decided, &Ok(()), "a live holder was refused");
                    }
                    if superseded {
                        prop_assert!(decided.is_err(), "a superseded holder's write was accepted");
                    }
                    if decided.is_ok() {
                        made[i].wrote = true;
                    }
                }
                Step::End(_) | Step::Write(_) => {}
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn a_lock_accepts_live_holders_and_refuses_superseded_ones(steps in steps()) {
            replay(Admits::One, &steps)?;
        }

        #[test]
        fn a_semaphore_accepts_live_holders_and_refuses_superseded_ones(
            steps in steps(),
            permits in 1u32..4,
        ) {
            replay(Admits::Permits(permits), &steps)?;
        }

        #[test]
        fn a_read_write_lock_accepts_live_holders_and_refuses_superseded_ones(steps in steps()) {
            replay(Admits::SharedOrExclusive, &steps)?;
        }
    }
}
