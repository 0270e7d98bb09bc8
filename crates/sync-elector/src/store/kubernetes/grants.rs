//! A Lease that keeps every grant of a semaphore or read-write lock (docs/semaphores.md,
//! "Kubernetes: one Lease per name"), without I/O: the annotations that carry
//! [`Grants`], and the dating of each entry on this elector's clock.
//!
//! - `sync.metaparticle.io/kind` is `semaphore` (with `sync.metaparticle.io/permits`) or `rwlock`;
//!   a Lease without it is a lock.
//! - `sync.metaparticle.io/grants` is a JSON list of entries: holder, what it holds, token, ttl in
//!   seconds, renewal count, value.
//! - `spec.leaseTransitions` is the last token minus one (a lock's token is `leaseTransitions + 1`
//!   too, so a name's tokens keep growing when its kind changes). `holderIdentity` names the
//!   oldest grant's holder, with ` (+K)` for K more, and `leaseDurationSeconds` the longest ttl, so
//!   `kubectl get leases` shows who holds, and client-go leader election sees the Lease held.
//! - An entry lives for its ttl after this elector *first saw it as it is* ([`Sightings`]): its
//!   holder's renewal changes its count, and so its date. Wall-clock times in the Lease are for
//!   people, never compared (docs/timing.md, rule 1).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::store::grants::{Entry, Grants, Held, Kind, MAX_ENTRIES};

/// The annotation naming the kind of a name that is not a lock.
pub const KIND_ANNOTATION: &str = "sync.metaparticle.io/kind";

/// The annotation holding a semaphore's number of permits.
pub const PERMITS_ANNOTATION: &str = "sync.metaparticle.io/permits";

/// The annotation holding every entry, as JSON.
pub const GRANTS_ANNOTATION: &str = "sync.metaparticle.io/grants";

/// One entry as the Lease keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    holder: String,
    /// `permit=N`, `shared`, `exclusive` or `waiting`.
    held: String,
    #[serde(default)]
    token: u64,
    /// Whole seconds, as a Lease counts them.
    ttl: u64,
    #[serde(default)]
    renewals: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

impl Stored {
    fn key(&self) -> (&str, u64, u64) {
        (&self.holder, self.token, self.renewals)
    }
}

/// A Lease whose annotations do not say what this elector can use; someone edited it by hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the Lease's annotation {annotation} is unusable ({reason}); fix or remove it, or delete the \
     Lease once nothing holds it"
)]
pub struct Malformed {
    /// Which annotation.
    pub annotation: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn malformed(annotation: &'static str, reason: impl Into<String>) -> Malformed {
    Malformed {
        annotation,
        reason: reason.into(),
    }
}

/// When this elector first saw each entry of one Lease as it is now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sightings(BTreeMap<(String, u64, u64), Instant>);

impl Sightings {
    /// The sightings after seeing `lease` at `now`: an entry seen before as it is keeps its date,
    /// a new or renewed one is dated `now`, and entries gone are forgotten.
    pub fn update(&self, lease: &Lease, now: Instant) -> Result<Self, Malformed> {
        Ok(Self(
            stored(lease)?
                .iter()
                .map(|s| {
                    let date = self.0.get(&own(s.key())).copied().unwrap_or(now);
                    (own(s.key()), date)
                })
                .collect(),
        ))
    }
}

fn own((holder, token, renewals): (&str, u64, u64)) -> (String, u64, u64) {
    (holder.to_owned(), token, renewals)
}

fn annotation<'a>(lease: &'a Lease, key: &str) -> Option<&'a str> {
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn stored(lease: &Lease) -> Result<Vec<Stored>, Malformed> {
    match annotation(lease, GRANTS_ANNOTATION) {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_str(json)
            .map_err(|e| malformed(GRANTS_ANNOTATION, format!("not a list of entries: {e}"))),
    }
}

/// The kind a Lease records: `None` for a lock.
pub fn kind(lease: &Lease) -> Result<Option<Kind>, Malformed> {
    match annotation(lease, KIND_ANNOTATION) {
        None => Ok(None),
        Some("rwlock") => Ok(Some(Kind::ReadWrite)),
        Some("semaphore") => {
            let permits = annotation(lease, PERMITS_ANNOTATION)
                .ok_or_else(|| malformed(PERMITS_ANNOTATION, "missing for a semaphore"))?;
            match permits.parse::<u32>() {
                Ok(n) if (1..=MAX_ENTRIES as u32).contains(&n) => {
                    Ok(Some(Kind::Semaphore { permits: n }))
                }
                _ => Err(malformed(
                    PERMITS_ANNOTATION,
                    format!("{permits:?} is not a whole number from 1 to {MAX_ENTRIES}"),
                )),
            }
        }
        Some(other) => Err(malformed(
            KIND_ANNOTATION,
            format!("{other:?} is neither \"semaphore\" nor \"rwlock\""),
        )),
    }
}

fn held(text: &str) -> Option<Held> {
    match text {
        "shared" => Some(Held::Shared),
        "exclusive" => Some(Held::Exclusive),
        "waiting" => Some(Held::Waiting),
        _ => text
            .strip_prefix("permit=")
            .and_then(|n| n.parse().ok())
            .map(Held::Permit),
    }
}

fn held_text(held: Held) -> String {
    match held {
        Held::Permit(n) => format!("permit={n}"),
        Held::Shared => "shared".into(),
        Held::Exclusive => "exclusive".into(),
        Held::Waiting => "waiting".into(),
    }
}

/// The record a Lease of a semaphore or read-write lock keeps, each entry dated by `sightings`
/// (an entry they lack is dated `now`). `None` for a Lease without a kind: a lock.
pub fn read(
    lease: &Lease,
    sightings: &Sightings,
    now: Instant,
) -> Result<Option<Grants>, Malformed> {
    let Some(kind) = kind(lease)? else {
        return Ok(None);
    };
    let entries = stored(lease)?
        .into_iter()
        .map(|s| {
            let held = held(&s.held).ok_or_else(|| {
                malformed(
                    GRANTS_ANNOTATION,
                    format!("{:?} holds nothing known", s.held),
                )
            })?;
            let seen = sightings.0.get(&own(s.key())).copied().unwrap_or(now);
            let ttl = Duration::from_secs(s.ttl);
            Ok(Entry {
                holder: s.holder,
                held,
                token: s.token,
                ttl,
                value: s.value,
                renewals: s.renewals,
                expires_at: seen + ttl,
            })
        })
        .collect::<Result<Vec<_>, Malformed>>()?;
    let transitions = lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0);
    Ok(Some(Grants {
        kind: Some(kind),
        token: u64::try_from(transitions).unwrap_or(0) + 1,
        entries,
    }))
}

/// Writes `grants` into `lease`, keeping every other annotation, label and field; `renewed` is
/// the wall-clock time written as `renewTime`, for people and client-go.
pub fn write(grants: &Grants, lease: &mut Lease, renewed: MicroTime) {
    let annotations = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match grants.kind {
        Some(Kind::Semaphore { permits }) => {
            annotations.insert(KIND_ANNOTATION.into(), "semaphore".into());
            annotations.insert(PERMITS_ANNOTATION.into(), permits.to_string());
        }
        Some(Kind::ReadWrite) => {
            annotations.insert(KIND_ANNOTATION.into(), "rwlock".into());
            annotations.remove(PERMITS_ANNOTATION);
        }
        Some(Kind::Lock) | None => {}
    }
    let stored: Vec<Stored> = grants
        .entries
        .iter()
        .map(|e| Stored {
            holder: e.holder.clone(),
            held: held_text(e.held),
            token: e.token,
            ttl: e.ttl.as_secs(),
            renewals: e.renewals,
            value: e.value.clone(),
        })
        .collect();
    annotations.insert(
        GRANTS_ANNOTATION.into(),
        serde_json::to_string(&stored).expect("entries serialize"),
    );
    let granted: Vec<&Entry> = grants
        .entries
        .iter()
        .filter(|e| e.held != Held::Waiting)
        .collect();
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = granted.first().map(|oldest| match granted.len() {
        1 => oldest.holder.clone(),
        n => format!("{} (+{})", oldest.holder, n - 1),
    });
    let longest = grants.entries.iter().map(|e| e.ttl.as_secs()).max();
    if let Some(secs) = longest {
        spec.lease_duration_seconds = Some(i32::try_from(secs).unwrap_or(i32::MAX));
    }
    spec.lease_transitions =
        Some(i32::try_from(grants.token.saturating_sub(1)).unwrap_or(i32::MAX));
    spec.renew_time = Some(renewed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::grants::{Asks, Claim, Decision};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const TTL: Duration = Duration::from_secs(15);

    fn claim(holder: &str, asks: Asks) -> Claim<'_> {
        Claim {
            holder,
            asks,
            ttl: TTL,
            value: Some("10.0.0.7:8080"),
        }
    }

    fn stamp() -> MicroTime {
        MicroTime(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    fn written(grants: &Grants) -> Lease {
        let mut lease = Lease {
            metadata: ObjectMeta {
                name: Some("jobs".into()),
                annotations: Some(BTreeMap::from([("note".into(), "kept".into())])),
                ..ObjectMeta::default()
            },
            spec: None,
        };
        write(grants, &mut lease, stamp());
        lease
    }

    #[test]
    fn a_semaphore_reads_back_as_it_was_written_and_shows_its_holders() {
        let now = Instant::now();
        let mut grants = Grants::default();
        for holder in ["a", "b"] {
            let decision = grants.decide(&claim(holder, Asks::Permit { permits: 3 }), now);
            assert!(matches!(decision, Decision::Granted(_)));
        }
        let lease = written(&grants);
        let annotations = lease.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations["note"], "kept", "other annotations are kept");
        assert_eq!(annotations[KIND_ANNOTATION], "semaphore");
        assert_eq!(annotations[PERMITS_ANNOTATION], "3");
        let spec = lease.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a (+1)"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(1), "last token 2, minus one");

        let sightings = Sightings::default().update(&lease, now).unwrap();
        let read = read(&lease, &sightings, now).unwrap().unwrap();
        assert_eq!(
            read, grants,
            "kind, token and every entry, dated when first seen"
        );
    }

    #[test]
    fn an_entry_lives_for_its_ttl_after_this_elector_first_saw_it_as_it_is() {
        let t0 = Instant::now();
        let mut grants = Grants::default();
        let Decision::Granted(a) = grants.decide(&claim("a", Asks::Shared), t0) else {
            panic!()
        };
        let first = written(&grants);
        let sightings = Sightings::default().update(&first, t0).unwrap();

        // Seen again later, unchanged: still dated t0.
        let t1 = t0 + Duration::from_secs(10);
        let sightings = sightings.update(&first, t1).unwrap();
        let entry = &read(&first, &sightings, t1).unwrap().unwrap().entries[0];
        assert_eq!(entry.expires_at, t0 + TTL);

        // Renewed: dated when the renewal is seen, not by any clock in the Lease.
        grants.renew("a", a.token, t1).unwrap();
        let renewed = written(&grants);
        let t2 = t1 + Duration::from_secs(1);
        let sightings = sightings.update(&renewed, t2).unwrap();
        let entry = &read(&renewed, &sightings, t2).unwrap().unwrap().entries[0];
        assert_eq!(entry.expires_at, t2 + TTL);

        // Released: forgotten.
        grants.release("a", a.token).unwrap();
        let released = written(&grants);
        assert_eq!(
            sightings.update(&released, t2).unwrap(),
            Sightings::default()
        );
        let spec = released.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity, None, "nobody holds");
    }

    #[test]
    fn tokens_continue_from_a_lock_s_lease_transitions() {
        let now = Instant::now();
        // A Lease a lock used: its last token was leaseTransitions + 1 = 5.
        let mut lease = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                lease_transitions: Some(4),
                ..LeaseSpec::default()
            }),
        };
        assert_eq!(read(&lease, &Sightings::default(), now), Ok(None), "a lock");
        lease
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(KIND_ANNOTATION.into(), "rwlock".into());
        let mut grants = read(&lease, &Sightings::default(), now).unwrap().unwrap();
        let Decision::Granted(entry) = grants.decide(&claim("a", Asks::Exclusive), now) else {
            panic!()
        };
        assert_eq!(entry.token, 6);
        write(&grants, &mut lease, stamp());
        assert_eq!(lease.spec.unwrap().lease_transitions, Some(5));
    }

    #[test]
    fn a_lease_edited_into_nonsense_is_refused_with_what_to_fix() {
        let with = |pairs: &[(&str, &str)]| Lease {
            metadata: ObjectMeta {
                annotations: Some(
                    pairs
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: None,
        };
        let now = Instant::now();
        let refused = |lease: Lease| read(&lease, &Sightings::default(), now).unwrap_err();
        let err = refused(with(&[(KIND_ANNOTATION, "mutex")]));
        assert_eq!(err.annotation, KIND_ANNOTATION);
        assert!(err.to_string().contains("fix or remove it"), "{err}");
        let err = refused(with(&[(KIND_ANNOTATION, "semaphore")]));
        assert_eq!(err.annotation, PERMITS_ANNOTATION);
        for permits in ["0", "129", "three"] {
            let err = refused(with(&[
                (KIND_ANNOTATION, "semaphore"),
                (PERMITS_ANNOTATION, permits),
            ]));
            assert_eq!(err.annotation, PERMITS_ANNOTATION, "{permits}");
        }
        let err = refused(with(&[
            (KIND_ANNOTATION, "rwlock"),
            (GRANTS_ANNOTATION, "{\"holder\": 1}"),
        ]));
        assert_eq!(err.annotation, GRANTS_ANNOTATION);
        let err = refused(with(&[
            (KIND_ANNOTATION, "rwlock"),
            (
                GRANTS_ANNOTATION,
                r#"[{"holder":"a","held":"reader","ttl":15}]"#,
            ),
        ]));
        assert!(err.reason.contains("reader"), "{err}");
    }
}
