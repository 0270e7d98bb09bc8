//! What the tests on the one-node cluster (sync-testkit's `Cluster`) watch, on one clock (the
//! host's wall clock, which the container runtime also stamps log lines with): every line of
//! every container ([`logs`]), every version of a Lease ([`lease`]), the pods' status
//! ([`pods`]), answers through a Service ([`probe`]), and the figures a run measured
//! ([`Figures`]).

#![allow(dead_code)]

pub mod lease;
pub mod logs;
pub mod pods;
pub mod probe;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// A time on the one clock.
pub type At = DateTime<Utc>;

/// Now, on the one clock.
pub fn now() -> At {
    Utc::now()
}

/// Parses an RFC 3339 time, as the runtime stamps log lines and the API writes times.
pub fn parse_time(text: &str) -> Option<At> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The time from `from` to `to` (zero when `to` is earlier).
pub fn between(from: At, to: At) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

/// Polls `check` every 100 ms until it gives a value, or panics saying `what` after `within`.
pub fn eventually<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The figures a run measured, printed as they come and again together at the end, for
/// docs/kubernetes.md.
#[derive(Default)]
pub struct Figures(Mutex<Vec<(String, String)>>);

impl Figures {
    /// Records `name = value`.
    pub fn record(&self, name: &str, value: impl std::fmt::Display) {
        let value = value.to_string();
        eprintln!("figure: {name} = {value}");
        self.0.lock().unwrap().push((name.to_owned(), value));
    }

    /// Records a duration, in milliseconds below 10 s and seconds above.
    pub fn duration(&self, name: &str, took: Duration) {
        if took < Duration::from_secs(10) {
            self.record(name, format!("{} ms", took.as_millis()));
        } else {
            self.record(name, format!("{:.1} s", took.as_secs_f64()));
        }
    }

    /// Prints every figure as a Markdown table.
    pub fn print(&self) {
        eprintln!("| figure | measured |\n| --- | --- |");
        for (name, value) in self.0.lock().unwrap().iter() {
            eprintln!("| {name} | {value} |");
        }
    }
}
