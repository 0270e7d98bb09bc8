//! The protected resource: a register that takes writes of `(worker, token, sequence)` over a
//! Unix socket and refuses the stale ones by the fencing rule of the primitive that protects it
//! ([`crate::fence`]; for a lock: any token lower than the highest it has accepted). It keeps
//! every write, accepted or not, in the order it decided them.
//!
//! A Unix socket reaches workers in every network namespace, so partitions cut a worker off from
//! its store but never from the resource it protects.
//!
//! The protocol is one line each way: `WRITE <worker> <token> <seq> [<grant>]` answered by `OK`,
//! `STALE <highest>` or `FOREIGN <grant>` (a grant this register does not take). The grant is
//! `lock` (the default), `permit=<n>`, `shared` or `exclusive`.

use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::Serialize;
use sync_testkit::clock::now_ns;

use crate::fence::{Admits, Fence, Grant};

/// One write as the register decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Write {
    /// When it was decided, on the shared monotonic clock.
    pub at: u64,
    /// The writing worker.
    pub worker: u32,
    /// The fencing token the write carried.
    pub token: u64,
    /// What the writer said it holds.
    pub grant: Grant,
    /// The worker's sequence number within its critical section.
    pub seq: u64,
    /// Whether the register took it.
    pub accepted: bool,
}

#[derive(Debug)]
struct State {
    fence: Fence,
    last_writer: Option<u32>,
    log: Vec<Write>,
}

/// The register, served on a Unix socket by a thread per connection.
pub struct Register {
    path: PathBuf,
    state: Arc<Mutex<State>>,
}

impl Register {
    /// Serves a fresh register at `dir/register.sock`, taking the grants `admits` names.
    pub fn start(dir: &Path, admits: Admits) -> Result<Self> {
        let path = dir.join("register.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("binding the register at {}", path.display()))?;
        let state = Arc::new(Mutex::new(State {
            fence: Fence::new(admits),
            last_writer: None,
            log: Vec::new(),
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        Ok(Self { path, state })
    }

    /// The socket's path, for workers.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The worker whose write was accepted last: the holder, as far as the resource knows.
    pub fn last_writer(&self) -> Option<u32> {
        self.state.lock().expect("register poisoned").last_writer
    }

    /// Every write so far, in the order decided.
    pub fn log(&self) -> Vec<Write> {
        self.state.lock().expect("register poisoned").log.clone()
    }
}

fn serve(stream: UnixStream, state: &Mutex<State>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines().map_while(Result::ok) {
        let answer = match parse(&line) {
            Some((worker, token, seq, grant)) => decide(state, worker, token, seq, grant),
            None => format!(
                "ERROR expected `WRITE <worker> <token> <seq> [lock|permit=<n>|shared|exclusive]`, \
                 got {line:?}"
            ),
        };
        if writeln!(writer, "{answer}").is_err() {
            return;
        }
    }
}

fn parse(line: &str) -> Option<(u32, u64, u64, Grant)> {
    let mut parts = line.split_whitespace();
    (parts.next()? == "WRITE").then_some(())?;
    let parsed = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next().map_or(Ok(Grant::Lock), str::parse).ok()?,
    );
    parts.next().is_none().then_some(parsed)
}

/// Decides a write by the fence's rule, and logs it.
fn decide(state: &Mutex<State>, worker: u32, token: u64, seq: u64, grant: Grant) -> String {
    let mut state = state.lock().expect("register poisoned");
    let decided = state.fence.admit(grant, token);
    if decided.is_ok() {
        state.last_writer = Some(worker);
    }
    let at = now_ns();
    state.log.push(Write {
        at,
        worker,
        token,
        grant,
        seq,
        accepted: decided.is_ok(),
    });
    match decided {
        Ok(()) => "OK".into(),
        Err(refusal) => refusal.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_token_is_refused_after_a_higher_one() {
        let dir = sync_testkit::temp_dir("register-unit");
        let register = Register::start(&dir, Admits::One).unwrap();
        let mut stream = UnixStream::connect(register.path()).unwrap();
        let mut lines = BufReader::new(stream.try_clone().unwrap()).lines();
        let mut ask = |line: &str| {
            writeln!(stream, "{line}").unwrap();
            lines.next().unwrap().unwrap()
        };
        assert_eq!(ask("WRITE 1 5 1"), "OK");
        assert_eq!(ask("WRITE 2 7 1"), "OK");
        assert_eq!(ask("WRITE 1 5 2"), "STALE 7");
        assert_eq!(ask("WRITE 2 7 2"), "OK");
        assert_eq!(ask("WRITE 2 7 3 lock"), "OK");
        assert_eq!(ask("WRITE 2 7 4 shared"), "FOREIGN shared");
        assert!(ask("nonsense").starts_with("ERROR"));
        assert!(ask("WRITE 2 7 5 lock extra").starts_with("ERROR"));
        let log = register.log();
        assert_eq!(log.len(), 6);
        assert!(!log[2].accepted);
        assert_eq!(register.last_writer(), Some(2));
    }
}
