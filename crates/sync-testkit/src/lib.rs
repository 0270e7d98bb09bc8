//! Real parts, started for real, shared by the elector's tests and the benchmark harness: the
//! `sync-elector` binary as a child process ([`ElectorProc`]), real etcd clusters from Debian's
//! `etcd-server` ([`EtcdCluster`]), and small process helpers.
//!
//! These are test tools: they panic with a message that says what is missing or what went wrong.

mod elector;
mod etcd;
mod process;

pub use elector::ElectorProc;
pub use etcd::EtcdCluster;
pub use process::{free_port, signal_pid, temp_dir, wait_child};
