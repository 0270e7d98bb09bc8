//! Real parts, started for real, shared by the elector's tests, the benchmark harness and the
//! chaos harness: the `sync-elector` binary as a child process ([`ElectorProc`]), real etcd
//! clusters from Debian's `etcd-server` ([`EtcdCluster`]), a real kube-apiserver with its etcd
//! ([`ControlPlane`]), a one-node cluster running our images in pods ([`Cluster`]), client-go's
//! leader election as a peer ([`client_go::ClientGoElector`]), each store started with electors
//! on it ([`stores::Backend`]), a real Prometheus scraping electors
//! ([`Prometheus`]), one clock for every process ([`clock`]), what a test must leave
//! on the machine as it found it ([`HostState`]), and small process helpers.
//!
//! These are test tools: they panic with a message that says what is missing or what went wrong.

pub mod client_go;
pub mod clock;
mod cluster;
mod control_plane;
mod elector;
mod etcd;
mod host;
pub mod http;
mod pki;
mod process;
mod prometheus;
pub mod stores;

pub use cluster::{Cluster, ImageArchive, NODE_NAME, images_dir};
pub use control_plane::{ControlPlane, control_plane_dir};
pub use elector::{ElectorProc, built_elector, release_elector};
pub use etcd::EtcdCluster;
pub use host::HostState;
pub use process::{
    Proc, TempDir, connections_to, free_port, machine, signal_pid, temp_dir, wait_child,
};
pub use prometheus::{Alert, DashboardPanel, Prometheus, Target, dashboard};
