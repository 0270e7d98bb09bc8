//! The etcd store, in one test binary: against real etcd processes (`store`: the shared
//! conformance suite and the store's own order and load), and several electors as processes on a
//! real three-member cluster (`cluster`).

#[path = "../support/mod.rs"]
mod support;

mod cluster;
mod store;

/// The child role: runs only when a test starts this binary as a client process.
#[test]
#[ignore = "a client role for child processes; the tests start it themselves"]
fn child_process() {
    support::child_main();
}
