//! Starts worker processes (see [`crate::worker`]) and reads what they report.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

/// A worker process and its report lines.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    role: String,
}

/// What a worker reported: the time on the shared clock, and the token of an `ACQ`.
#[derive(Debug, Clone)]
pub struct Event {
    /// When, on [`sync_testkit::clock::now_ns`].
    pub at: u64,
    /// The fencing token for `ACQ`.
    pub token: u64,
}

impl Worker {
    /// Starts this binary as worker `role` with `env`.
    pub fn spawn(role: &str, env: &[(&str, String)]) -> Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["__worker", role])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "off")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting worker {role}"))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            lines,
            role: role.into(),
        })
    }

    /// The next event of `kind` within `within`.
    pub fn expect(&self, kind: &str, within: Duration) -> Result<Event> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).map_err(|_| {
                anyhow!("worker {} reported no {kind} within {within:?}", self.role)
            })?;
            let mut parts = line.split_whitespace();
            let got = parts.next().unwrap_or_default();
            let at = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
            let token = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
            if got == kind {
                return Ok(Event { at, token });
            }
            if got == "LOST" {
                return Err(anyhow!(
                    "worker {} lost its lock while {kind} was expected",
                    self.role
                ));
            }
        }
    }

    /// Sends an order (`release` or `stop`).
    pub fn order(&mut self, order: &str) -> Result<()> {
        writeln!(self.stdin, "{order}")?;
        Ok(self.stdin.flush()?)
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the worker with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}
