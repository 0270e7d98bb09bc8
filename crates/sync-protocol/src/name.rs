//! Lock names: Kubernetes object names (DNS-1123 subdomains), checked at the edge so that every
//! store accepts every name that passes.

use std::fmt;

/// The longest lock name, as for a Kubernetes object name.
pub const MAX_NAME_LEN: usize = 253;

/// The naming rule as a regular expression (with [`MAX_NAME_LEN`] as the length limit), as the
/// OpenAPI document states it. [`LockName::new`] does not use it; a test checks they agree.
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A lock name that every store accepts: at most 253 characters of lower-case letters, digits,
/// `-` and `.`, starting and ending with a letter or digit, with no empty, leading- or
/// trailing-dash label between dots.
///
/// ```
/// use sync_protocol::LockName;
///
/// assert!(LockName::new("shard-7.orders").is_ok());
/// let err = LockName::new("Test").unwrap_err();
/// assert!(err.to_string().contains("lower-case"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockName(String);

/// Why a lock name was refused, in words that say what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidName {
    name: String,
    reason: &'static str,
}

impl InvalidName {
    /// The refused name (cut to 64 characters, so an oversized name does not flood logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid lock name {:?}: {}; a lock name is a Kubernetes object name: up to {MAX_NAME_LEN} \
             lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
            self.name, self.reason
        )
    }
}

impl std::error::Error for InvalidName {}

impl LockName {
    /// Checks `name` against the naming rule.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        match check(&name) {
            Ok(()) => Ok(Self(name)),
            Err(reason) => Err(InvalidName {
                name: name.chars().take(64).collect(),
                reason,
            }),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for LockName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn check(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("it is longer than 253 characters");
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("it has upper-case letters; use lower-case");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err("it has a character other than lower-case letters, digits, '-' and '.'");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty part between dots, or starts or ends with a dot");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a part between dots starts or ends with '-'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubernetes_names() {
        for ok in [
            "a",
            "test",
            "shard-7",
            "a.b.c",
            "0",
            "x".repeat(253).as_str(),
            "a-b.c-d",
        ] {
            assert!(LockName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_what_kubernetes_refuses_with_a_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("Test", "upper-case"),
            ("a_b", "character"),
            ("a/b", "character"),
            ("-a", "'-'"),
            ("a-", "'-'"),
            ("a..b", "empty part"),
            (".a", "empty part"),
            ("a.", "empty part"),
            ("é", "character"),
            (&"x".repeat(254), "253"),
        ] {
            let err = LockName::new(bad).unwrap_err();
            assert!(err.to_string().contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn long_names_are_cut_in_errors() {
        let err = LockName::new("X".repeat(10_000)).unwrap_err();
        assert_eq!(err.name().len(), 64);
    }
}

#[cfg(test)]
mod rule {
    use super::*;
    use proptest::prelude::*;

    /// Strings near the rule's edges: its alphabet, with upper case, '_' and '/' mixed in.
    fn near_names() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9.-]{0,12}",
            "[a-zA-Z0-9._/-]{0,20}",
            "[a-z0-9]{240,260}",
            "([a-z0-9-]{1,5}\\.){0,4}[a-z0-9-]{0,5}",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Our hand-written check and the regular expression the OpenAPI document publishes agree
        /// on every string, and the check never panics.
        #[test]
        fn the_check_and_the_published_pattern_agree(name in near_names()) {
            let pattern = regex::Regex::new(NAME_PATTERN).unwrap();
            let by_pattern = name.len() <= MAX_NAME_LEN && pattern.is_match(&name);
            prop_assert_eq!(LockName::new(name.clone()).is_ok(), by_pattern, "{:?}", name);
        }
    }
}
