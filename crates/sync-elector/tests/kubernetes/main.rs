//! The Kubernetes store and everything around it, in one test binary, so that its tests share one
//! real kube-apiserver (sync-testkit's `ControlPlane::shared`) and one link:
//!
//! - `store`: the store over real HTTP, the shared conformance suite, faults from our test server;
//! - `fidelity`: our Kubernetes API test server against the real kube-apiserver;
//! - `cluster`: several electors as processes sharing Leases;
//! - `deploy` and `manifests`: `deploy/` and the README on the real kube-apiserver, and the
//!   manifests checked for wiring;
//! - `monitoring`: `deploy/monitoring/` with a real Prometheus scraping electors;
//! - `publish`: `--publish`, the leader-only Service;
//! - `client_go`: side by side with client-go's leader election on one Lease.

#[path = "../support/mod.rs"]
mod support;

mod client_go;
mod cluster;
mod deploy;
mod fidelity;
mod manifests;
mod monitoring;
mod publish;
mod store;

/// The child role: runs only when a test starts this binary as a client process.
#[test]
#[ignore = "a client role for child processes; the tests start it themselves"]
fn child_process() {
    support::child_main();
}
