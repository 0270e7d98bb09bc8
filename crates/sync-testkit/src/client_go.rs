//! client-go's leader election as a child process: `test-deps/client-go-elector`, a
//! `LeaderElector` with a LeaseLock and `ReleaseOnCancel`, built by `scripts/install-test-deps`.
//! Its transitions are read as they happen, each stamped with the monotonic clock every process
//! of a run shares ([`crate::clock`]).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Proc;
use crate::control_plane::binary;

/// client-go's three timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// `LeaseDuration`.
    pub lease_duration: Duration,
    /// `RenewDeadline`.
    pub renew_deadline: Duration,
    /// `RetryPeriod`.
    pub retry_period: Duration,
}

impl Default for Timings {
    /// The defaults most controllers use: 15 s, 10 s, 2 s.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One line client-go-elector printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// When, on the shared monotonic clock (nanoseconds).
    pub at_ns: u64,
    /// `candidate`, `started-leading`, `stopped-leading`, `new-leader` or `exiting`.
    pub what: String,
    /// Whose: this candidate, or for `new-leader` the leader it observed.
    pub identity: String,
}

/// A client-go candidate, started for real.
pub struct ClientGoElector {
    process: Proc,
    /// The candidate's identity.
    pub identity: String,
    seen: Arc<Mutex<Vec<Transition>>>,
    lines: Receiver<Transition>,
}

/// The built `client-go-elector` program (panics with what to run when it is missing). Its
/// `--worker` mode speaks sync-bench's worker protocol.
pub fn program() -> std::path::PathBuf {
    binary("client-go-elector")
}

impl ClientGoElector {
    /// Starts a candidate named `identity` for the Lease `lease` in `namespace`, through
    /// `kubeconfig`, with `timings`, and waits until it runs.
    pub fn start(
        kubeconfig: &Path,
        namespace: &str,
        lease: &str,
        identity: &str,
        timings: Timings,
    ) -> Self {
        let secs = |d: Duration| format!("{}ms", d.as_millis());
        let mut child = Command::new(program())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", namespace, "--lease", lease])
            .args(["--identity", identity])
            .args(["--lease-duration", &secs(timings.lease_duration)])
            .args(["--renew-deadline", &secs(timings.renew_deadline)])
            .args(["--retry-period", &secs(timings.retry_period)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("client-go-elector starts");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut parts = line.splitn(3, ' ');
                let (Some(at), Some(what), Some(identity)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let Ok(at_ns) = at.parse() else { continue };
                let transition = Transition {
                    at_ns,
                    what: what.to_owned(),
                    identity: identity.to_owned(),
                };
                record.lock().unwrap().push(transition.clone());
                if send.send(transition).is_err() {
                    break;
                }
            }
        });
        let candidate = Self {
            process: Proc::new(child),
            identity: identity.to_owned(),
            seen,
            lines,
        };
        candidate.expect("candidate", Duration::from_secs(30));
        candidate
    }

    /// The next transition named `what`, skipping others, within `within`.
    pub fn next(&self, what: &str, within: Duration) -> Option<Transition> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(t) if t.what == what => return Some(t),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// [`Self::next`], or a panic that says what did not come.
    pub fn expect(&self, what: &str, within: Duration) -> Transition {
        self.next(what, within).unwrap_or_else(|| {
            panic!(
                "client-go candidate {}: no {what:?} within {within:?}; it printed {:?}",
                self.identity,
                self.transitions()
            )
        })
    }

    /// Every transition so far.
    pub fn transitions(&self) -> Vec<Transition> {
        self.seen.lock().unwrap().clone()
    }
}

/// The process: its id, signals (`TERM` releases the Lease, `KILL`, `STOP`, `CONT`), waiting for
/// its exit (dropping the candidate kills it).
impl std::ops::Deref for ClientGoElector {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.process
    }
}

impl std::ops::DerefMut for ClientGoElector {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.process
    }
}
