//! The id that names a lease: 128 random bits, written on the wire as 32 lowercase hex digits.

use std::fmt;
use std::str::FromStr;

/// A lease's id, the secret that renews and releases it.
///
/// It is kept as its 128 bits rather than as text: the ledger, the keeper's agenda and the
/// tombstones each key a map by it, and a string in each would be four heap allocations per
/// held lease.
///
/// ```
/// use sync_elector::lease_id::LeaseId;
///
/// let id = LeaseId::random();
/// let text = id.to_string();
/// assert_eq!(text.len(), 32);
/// assert_eq!(text.parse::<LeaseId>(), Ok(id));
/// assert!("not-a-lease".parse::<LeaseId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(u128);

impl LeaseId {
    /// A new id from 128 random bits (a version 4 UUID's).
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().as_u128())
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({self})")
    }
}

/// Text that is not a lease id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a lease id is 32 lowercase hex digits, as the grant's lease_id")]
pub struct NotALeaseId;

impl FromStr for LeaseId {
    type Err = NotALeaseId;

    /// Exactly 32 lowercase hex digits: the form [`LeaseId`]'s `Display` writes, and no other.
    fn from_str(text: &str) -> Result<Self, NotALeaseId> {
        let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if text.len() != 32 || !text.as_bytes().iter().all(hex) {
            return Err(NotALeaseId);
        }
        u128::from_str_radix(text, 16)
            .map(Self)
            .map_err(|_| NotALeaseId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_back_from_what_it_writes() {
        for id in [
            LeaseId(0),
            LeaseId(u128::MAX),
            LeaseId(0xabc),
            LeaseId::random(),
        ] {
            let text = id.to_string();
            assert_eq!(text.len(), 32, "{text}");
            assert_eq!(text.parse(), Ok(id));
        }
        assert_eq!(LeaseId(0xabc).to_string(), format!("{}abc", "0".repeat(29)));
    }

    #[test]
    fn only_32_lowercase_hex_digits_are_an_id() {
        let good = "0123456789abcdef0123456789abcdef";
        assert!(good.parse::<LeaseId>().is_ok());
        for bad in [
            "",
            &good[1..],
            &format!("{good}0"),
            &good.to_uppercase(),
            &format!("+{}", &good[1..]),
            &format!("{}g", &good[1..]),
            "0123456789abcdef0123456789abcdé",
        ] {
            assert_eq!(bad.parse::<LeaseId>(), Err(NotALeaseId), "{bad:?}");
        }
    }
}
