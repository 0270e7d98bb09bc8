//! The elector as a real process and a real server, in one test binary:
//!
//! - `process` and `protocol`: clients in this process and in processes of their own, and the
//!   wire as any client sees it; `primitives`: semaphores and read-write locks on the wire;
//! - `metrics`: `/metrics` as an operator reads it;
//! - `access`: loopback, `--allow-remote` and the bearer token;
//! - `bad_input`, `hostile` and `fuzz`: mistakes, abuse and random requests, answered without
//!   harm.

#[path = "../support/mod.rs"]
mod support;

mod access;
mod bad_input;
mod fuzz;
mod hostile;
mod metrics;
mod primitives;
mod process;
mod protocol;

/// The child role: runs only when a test starts this binary as a client process.
#[test]
#[ignore = "a client role for child processes; the tests start it themselves"]
fn child_process() {
    support::child_main();
}
