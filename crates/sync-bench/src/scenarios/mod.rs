//! The scenarios of a run, one module each. Every scenario measures each store, then the
//! alternatives it applies to, and adds its rows to the report.

pub mod acquire;
pub mod client_go;
pub mod failover;
pub mod floor;
pub mod footprint;
pub mod handover;
pub mod hold;
pub mod instructions;
pub mod kube_env;
pub mod load;
pub mod metrics;
pub mod primitives;
pub mod soak;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::report::Report;
use sync_testkit::stores::{Backend, StoreKind};

/// Every scenario, in the order `all` runs them.
pub const ALL: [&str; 10] = [
    "floor",
    "acquire",
    "instructions",
    "handover",
    "hold",
    "failover",
    "footprint",
    "load",
    "primitives",
    "metrics",
];

/// Scenarios run only by name: `soak` takes a minute per store and belongs to the fault and
/// abuse work rather than to the comparison.
pub const BY_NAME: [&str; 1] = ["soak"];

/// What every scenario shares: the runtime for in-process parts, the elector binary, the mode,
/// and the report.
pub struct Run {
    /// Runs the Kubernetes test server and in-process clients.
    pub runtime: tokio::runtime::Runtime,
    /// The `sync-elector` binary measured.
    pub elector: PathBuf,
    /// `--quick`: fewer trials and shorter windows.
    pub quick: bool,
    /// Where the rows go.
    pub report: Report,
}

impl Run {
    /// `quick` in a quick run, else `full`.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }

    /// The stores scenario `scenario` measures: [`StoreKind::ALL`], then the real kube-apiserver
    /// when `scripts/install-test-deps` has built it (with client-go's leader election); when it
    /// has not, a row says so and what to run.
    pub fn stores(&mut self, scenario: &str) -> Vec<StoreKind> {
        let mut stores = StoreKind::ALL.to_vec();
        let dir = sync_testkit::control_plane_dir();
        let missing: Vec<&str> = ["kube-apiserver", "etcd", "client-go-elector"]
            .into_iter()
            .filter(|name| !dir.join(name).exists())
            .collect();
        if missing.is_empty() {
            stores.push(StoreKind::KubeApiServer);
        } else {
            self.report.missing(
                scenario,
                &StoreKind::KubeApiServer.system(),
                "every figure, and client-go's beside it",
                &format!(
                    "not built: {} missing from {}; run scripts/install-test-deps",
                    missing.join(", "),
                    dir.display()
                ),
            );
        }
        stores
    }

    /// Starts `kind` for one scenario.
    pub fn backend(&self, kind: StoreKind) -> Result<Backend> {
        eprintln!("  starting the {} store", kind.name());
        Backend::start(kind, &self.runtime)
    }
}

/// Runs scenario `name`.
pub fn run(name: &str, run: &mut Run) -> Result<()> {
    eprintln!("scenario {name}");
    match name {
        "floor" => floor::run(run),
        "acquire" => acquire::run(run),
        "instructions" => instructions::run(run),
        "handover" => handover::run(run),
        "hold" => hold::run(run),
        "failover" => failover::run(run),
        "footprint" => footprint::run(run),
        "load" => load::run(run),
        "primitives" => primitives::run(run),
        "metrics" => metrics::run(run),
        "soak" => soak::run(run),
        other => bail!(
            "unknown scenario {other:?}: pick one of {}, {} or all",
            ALL.join(", "),
            BY_NAME.join(", ")
        ),
    }
}

/// A short pause that lets a worker that just released queue again before the next step
/// (loopback; generous).
pub fn settle() {
    std::thread::sleep(Duration::from_millis(30));
}

/// [`settle`], in async code: lets a waiter just spawned reach the elector's queue.
pub async fn settle_async() {
    tokio::time::sleep(Duration::from_millis(30)).await;
}

/// A pause that lets a worker that was just started reach the elector's queue.
pub fn settle_start() {
    std::thread::sleep(Duration::from_millis(400));
}
