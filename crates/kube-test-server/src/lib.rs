//! A Kubernetes API test server for `coordination.k8s.io/v1` Leases, served over real HTTP, so the
//! elector's Kubernetes store is tested through kube's real client and an ordinary kubeconfig.
//!
//! Kubernetes itself cannot run on our build machines; this server implements the part of the API
//! the elector uses, with the real server's semantics (checked against the Kubernetes API
//! documentation, "API Concepts" and the `Status` conventions):
//!
//! - create, get, list, update (PUT) and delete of namespaced Leases, and watch;
//! - PATCH as JSON merge patch and strategic merge patch (the same for a Lease), and server-side
//!   apply (`application/apply-patch+yaml`, written as JSON) with `fieldManager`, `force`, field
//!   ownership and `409 Conflict` for a field another manager owns with a different value;
//! - one resourceVersion counter for all objects; an update with a stale resourceVersion is
//!   `409 Conflict`, an update without one is unconditional, and an update that changes nothing
//!   keeps the resourceVersion; a duplicate create is `409 AlreadyExists`; a missing object is
//!   `404 NotFound`; create in an unknown namespace is `404 NotFound` (namespace);
//! - server-set metadata: `uid`, `creationTimestamp`, `resourceVersion`, `namespace`;
//! - every error is a `Status` object (`kind`, `status: Failure`, `message`, `reason`, `details`,
//!   `code`);
//! - watch (`?watch=true`) streams `ADDED`/`MODIFIED`/`DELETED` events as JSON lines: without a
//!   resourceVersion (or with `0`) it starts with the current objects as `ADDED`; from a
//!   resourceVersion it replays what happened after it; from one older than the retained history
//!   it sends an `ERROR` event with a `410 Expired` Status, as the real server does;
//!   `timeoutSeconds`, `fieldSelector=metadata.name=…` and equality `labelSelector`s are honoured.
//!
//! Fault injection: latency, an outage answering any status, dropped watch streams, a partition of
//! one client (its requests and watch events stall until healed), 403 Forbidden for one client,
//! and history compaction. It counts the requests of each client, named by its bearer token.
//!
//! Not covered: JSON patch (answers `415`), apply bodies in YAML that is not JSON, the
//! `managedFields` view of ownership (it is kept, not shown), other resources and API groups, discovery, authentication
//! beyond naming clients, admission, `generateName`, `managedFields`, list pagination
//! (`limit`/`continue`), watch bookmarks, set-based label selectors, and the protobuf encoding.

mod api;
mod faults;
mod objects;
mod patch;
mod status;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub use faults::Counts;

/// Shared by every handler.
pub(crate) struct Shared {
    pub(crate) objects: Mutex<objects::Objects>,
    pub(crate) faults: faults::Faults,
}

/// A running test server on a loopback port of its own.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let server = kube_test_server::TestServer::start().await?;
/// let kubeconfig = server.write_kubeconfig(&std::env::temp_dir(), "elector-a")?;
/// // KUBECONFIG=<kubeconfig> sync-elector --store kubernetes
/// server.set_failing(Some(503)); // an API server outage
/// # Ok(()) }
/// ```
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Starts a server on `127.0.0.1`, on a port the system picks, keeping 1000 changes of watch
    /// history.
    pub async fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            objects: Mutex::new(objects::Objects::new(1000)),
            faults: faults::Faults::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = api::router(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The server's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for `client`: this server, namespace `default`, and a bearer token naming the
    /// client (for counting and per-client faults).
    pub fn kubeconfig(&self, client: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: {client}\n    namespace: default\n\
             current-context: test\nusers:\n- name: {client}\n  user:\n    token: {client}\n",
            url = self.url()
        )
    }

    /// Writes [`kubeconfig`](Self::kubeconfig) to `dir/<client>.kubeconfig` and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path, client: &str) -> std::io::Result<PathBuf> {
        let path = dir.join(format!("{client}.kubeconfig"));
        std::fs::write(&path, self.kubeconfig(client))?;
        Ok(path)
    }

    /// A Lease as stored, for assertions.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .objects
            .lock()
            .expect("objects poisoned")
            .get(namespace, name)
            .ok()
    }

    /// Adds a namespace (only `default` exists at start).
    pub fn add_namespace(&self, namespace: &str) {
        self.shared
            .objects
            .lock()
            .expect("objects poisoned")
            .add_namespace(namespace);
    }

    /// Forgets the watch history: watches resuming from before now get 410.
    pub fn compact(&self) {
        self.shared
            .objects
            .lock()
            .expect("objects poisoned")
            .compact();
    }

    /// Adds latency to every request.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults.set_latency(latency);
    }

    /// Every request answers `code` (such as 503) until `None`: an outage.
    pub fn set_failing(&self, code: Option<u16>) {
        self.shared.faults.set_failing(code);
    }

    /// Cuts `client` off (its requests and watch events stall), or heals the partition.
    pub fn set_partitioned(&self, client: &str, partitioned: bool) {
        self.shared.faults.set_partitioned(client, partitioned);
    }

    /// Refuses `client` with 403, as a missing Role does.
    pub fn set_forbidden(&self, client: &str, forbidden: bool) {
        self.shared.faults.set_forbidden(client, forbidden);
    }

    /// Ends every open watch stream.
    pub fn drop_watches(&self) {
        self.shared.faults.drop_watches();
    }

    /// The requests `client` has sent.
    pub fn counts(&self, client: &str) -> Counts {
        self.shared.faults.counts(client)
    }
}
