//! The stores a harness runs against, started for real: the embedded memory store, the Kubernetes
//! API test server (in this process, over real HTTP), a real kube-apiserver ([`ControlPlane`]),
//! and etcd from Debian's `etcd-server`. Each starts electors on itself and counts the requests a
//! store receives.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{ControlPlane, ElectorProc, EtcdCluster};
use anyhow::{Result, bail};
use kube_test_server::TestServer;

/// Environment variables for a child process.
pub type Environment = Vec<(&'static str, String)>;

/// Which store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded memory store (one elector).
    Memory,
    /// Kubernetes Leases on the API test server.
    Kubernetes,
    /// etcd.
    Etcd,
    /// Kubernetes Leases on a real kube-apiserver ([`ControlPlane`]).
    KubeApiServer,
}

impl StoreKind {
    /// Every store the benchmark and chaos harnesses run by default, in report order.
    pub const ALL: [StoreKind; 3] = [StoreKind::Memory, StoreKind::Kubernetes, StoreKind::Etcd];

    /// The store's name in reports and harness flags.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Kubernetes => "kubernetes",
            StoreKind::Etcd => "etcd",
            StoreKind::KubeApiServer => "kube-apiserver",
        }
    }

    /// The elector's `--store` for it.
    pub fn store_flag(self) -> &'static str {
        match self {
            StoreKind::KubeApiServer => "kubernetes",
            other => other.name(),
        }
    }

    /// How the report names our elector on this store.
    pub fn system(self) -> String {
        format!("ours/{}", self.name())
    }
}

/// A started store.
pub enum Backend {
    /// Nothing to start.
    Memory,
    /// The test server and a folder for kubeconfigs.
    Kubernetes {
        /// The server.
        server: TestServer,
        /// Where kubeconfigs go.
        dir: crate::TempDir,
    },
    /// The etcd member.
    Etcd(EtcdCluster),
    /// A real kube-apiserver, and the namespace this backend's Leases live in.
    KubeApiServer {
        /// The control plane.
        plane: Plane,
        /// The namespace, of this backend's own on a shared control plane.
        namespace: String,
    },
}

/// A real kube-apiserver for one backend: the process's shared one, when nothing will fault it,
/// or one of its own.
pub enum Plane {
    /// [`ControlPlane::shared`].
    Shared(&'static ControlPlane),
    /// Started for this backend alone: faults may kill, pause and restart it.
    Own(Box<ControlPlane>),
}

impl std::ops::Deref for Plane {
    type Target = ControlPlane;
    fn deref(&self) -> &ControlPlane {
        match self {
            Plane::Shared(plane) => plane,
            Plane::Own(plane) => plane,
        }
    }
}

impl Backend {
    /// Starts `kind` (inside `runtime` for the test server), with a one-member etcd.
    pub fn start(kind: StoreKind, runtime: &tokio::runtime::Runtime) -> Result<Self> {
        Self::start_with(kind, runtime, 1)
    }

    /// Starts `kind`, with `etcd_members` members when it is etcd.
    pub fn start_with(
        kind: StoreKind,
        runtime: &tokio::runtime::Runtime,
        etcd_members: usize,
    ) -> Result<Self> {
        Ok(match kind {
            StoreKind::Memory => Backend::Memory,
            StoreKind::Kubernetes => Backend::Kubernetes {
                server: runtime.block_on(TestServer::start())?,
                dir: crate::temp_dir("stores-kube"),
            },
            StoreKind::Etcd => Backend::Etcd(EtcdCluster::start(etcd_members, "stores")),
            StoreKind::KubeApiServer => {
                let plane = ControlPlane::shared();
                Backend::KubeApiServer {
                    namespace: plane.create_namespace("stores"),
                    plane: Plane::Shared(plane),
                }
            }
        })
    }

    /// A real kube-apiserver of its own, for harnesses that fault it; Leases in `default`.
    pub fn own_kube_apiserver(test: &str) -> Self {
        Backend::KubeApiServer {
            plane: Plane::Own(Box::new(ControlPlane::start(test))),
            namespace: "default".into(),
        }
    }

    /// Which store this is.
    pub fn kind(&self) -> StoreKind {
        match self {
            Backend::Memory => StoreKind::Memory,
            Backend::Kubernetes { .. } => StoreKind::Kubernetes,
            Backend::Etcd(_) => StoreKind::Etcd,
            Backend::KubeApiServer { .. } => StoreKind::KubeApiServer,
        }
    }

    /// Starts an elector named `identity` on this store with the default ttl `ttl` and `extra`
    /// flags, and waits until it is ready.
    pub fn elector(
        &self,
        binary: &Path,
        identity: &str,
        ttl: u64,
        extra: &[&str],
    ) -> Result<ElectorProc> {
        let (mut args, env) = self.elector_args(identity, ttl)?;
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let elector = ElectorProc::spawn(binary, identity, &args, &env);
        wait_ready(&elector.url, Duration::from_secs(30))?;
        Ok(elector)
    }

    /// The flags and environment that put an elector named `identity` on this store with the
    /// default ttl `ttl` (for harnesses that start electors their own way).
    pub fn elector_args(&self, identity: &str, ttl: u64) -> Result<(Vec<String>, Environment)> {
        let mut args: Vec<String> = [
            "--store",
            self.kind().store_flag(),
            "--ttl",
            &format!("{ttl}s"),
        ]
        .map(String::from)
        .into();
        let mut env = Vec::new();
        match self {
            Backend::Memory => {}
            Backend::Kubernetes { server, dir } => {
                let kubeconfig = server.write_kubeconfig(dir, identity)?;
                env.push(("KUBECONFIG", kubeconfig.display().to_string()));
            }
            Backend::Etcd(cluster) => {
                args.extend(["--etcd-endpoints".to_owned(), cluster.endpoints()]);
            }
            Backend::KubeApiServer { plane, namespace } => {
                args.extend(["--namespace".to_owned(), namespace.clone()]);
                // A user of its own, so that the audit log counts this elector's requests.
                let kubeconfig = plane.user_kubeconfig(identity, namespace);
                env.push(("KUBECONFIG", kubeconfig.display().to_string()));
            }
        }
        Ok((args, env))
    }

    /// The etcd endpoints, for the etcd alternatives.
    pub fn etcd_endpoints(&self) -> Option<String> {
        match self {
            Backend::Etcd(cluster) => Some(cluster.endpoints()),
            _ => None,
        }
    }

    /// Writes a kubeconfig for client `name` of the Kubernetes API (for the Kubernetes
    /// alternatives; the test server, or the real one's audit log, counts that client's requests).
    pub fn kubeconfig(&self, name: &str) -> Result<String> {
        match self {
            Backend::Kubernetes { server, dir } => {
                Ok(server.write_kubeconfig(dir, name)?.display().to_string())
            }
            Backend::KubeApiServer { plane, namespace } => {
                Ok(plane.user_kubeconfig(name, namespace).display().to_string())
            }
            _ => bail!("only the Kubernetes stores have kubeconfigs"),
        }
    }

    /// The namespace the Kubernetes stores' Leases live in.
    pub fn namespace(&self) -> &str {
        match self {
            Backend::KubeApiServer { namespace, .. } => namespace,
            _ => "default",
        }
    }

    /// Requests the store has received so far, by method, from everyone (etcd: gRPC messages
    /// received, from its own metrics; Kubernetes: from `client`'s counts, at the test server or
    /// in the real API server's audit log). Empty for memory.
    pub fn requests(&self, client: &str) -> Result<HashMap<String, f64>> {
        match self {
            Backend::Memory => Ok(HashMap::new()),
            Backend::Kubernetes { server, .. } => {
                let c = server.counts(client);
                Ok(HashMap::from([
                    ("get".into(), c.get as f64),
                    ("list".into(), c.list as f64),
                    ("watch".into(), c.watch as f64),
                    ("create".into(), c.create as f64),
                    ("update".into(), c.update as f64),
                    ("patch".into(), c.patch as f64),
                    ("delete".into(), c.delete as f64),
                ]))
            }
            Backend::Etcd(cluster) => cluster.received(0),
            Backend::KubeApiServer { plane, .. } => Ok(plane
                .requests(client)
                .into_iter()
                .map(|(verb, n)| (verb, n as f64))
                .collect()),
        }
    }
}

/// Polls `GET /readyz` until it answers 200.
pub fn wait_ready(url: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if crate::http::get(&format!("{url}/readyz")).is_ok_and(|(status, _)| status == 200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the elector at {url} was not ready within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
