//! The sync-elector sidecar: distributed locks and leader election for the programs in its pod.
//!
//! Clients talk to it over HTTP on `127.0.0.1:13131` (`docs/protocol.md`); it does the heavy
//! lifting against a store. The binary is a thin `main.rs` over this library, so tests can run the
//! real server in-process.
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | flags and environment |
//! | [`api`] | the HTTP edge: routes, handlers, error mapping; v1 in [`api::v1`], the original Metaparticle elector protocol in [`api::legacy`] |
//! | [`manager`] | local wait queues, leases and their keepers |
//! | [`hooks`] | what the store and the manager tell the leader-only Service: `Takeover` and `Announce` |
//! | [`timing`] | the timing rules of one held lease (docs/timing.md, rule 2), pure |
//! | `publish` | the leader-only Service: an EndpointSlice listing the holder (Kubernetes) |
//! | `kube_api` | one way to talk to the Kubernetes API: connecting, timeouts, errors, writes |
//! | [`store`] | the store trait, its implementations and their conformance suite |
//! | [`metrics`] | Prometheus series |
//! | [`shutdown`] | SIGTERM and SIGINT |
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let server = sync_elector::Server::start(sync_elector::Config::local("127.0.0.1:0".parse()?)).await?;
//! println!("elector at {}", server.url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod api;
pub mod config;
pub mod hooks;
#[cfg(feature = "kubernetes")]
pub mod kube_api;
pub mod lease_id;
mod linger;
pub mod manager;
pub mod metrics;
#[cfg(feature = "kubernetes")]
pub mod publish;
mod serve;
pub mod shutdown;
pub mod store;
pub mod timing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{Config, ConfigError, StoreKind};
pub use manager::Manager;

/// How long open connections get to finish once shutdown has released every lock.
const DRAIN: Duration = Duration::from_secs(5);

/// A running elector: its listeners, its manager, and the tasks serving them.
pub struct Server {
    addr: SocketAddr,
    legacy_addr: Option<SocketAddr>,
    health_addr: Option<SocketAddr>,
    manager: Manager,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Opens the store, binds the listeners and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        config.check()?;
        let token = config.token()?;
        let (store, announce) = open_store(&config).await?;
        let identity = config.identity();
        let metrics = metrics::Metrics::with_lock_limit(config.metrics_lock_limit);
        let manager = Manager::new(store, identity.clone(), metrics, announce);
        let app = api::App {
            manager: manager.clone(),
            default_ttl: config.ttl,
            legacy_ttl: config.legacy_ttl,
            token: token.map(Arc::from),
            client_timeout: config.client_timeout,
        };
        let limits = serve::Limits::new(config.max_connections, config.client_timeout);
        let stop = CancellationToken::new();
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("could not listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let mut tasks = vec![spawn_serve(
            listener,
            api::router(app.clone()),
            stop.clone(),
            limits.clone(),
        )];
        let legacy_addr = serve_extra(
            config.legacy_listen,
            "--legacy-listen",
            api::legacy_router(app.clone()),
            &stop,
            &limits,
            &mut tasks,
        )
        .await?;
        let health_addr = serve_extra(
            config.health_listen,
            "--health-listen",
            api::health_router(app),
            &stop,
            &limits,
            &mut tasks,
        )
        .await?;
        info!(%identity, store = manager.store().kind(), ttl = %humantime::format_duration(config.ttl), "started");
        info!("listening on http://{addr}");
        if let Some(legacy) = legacy_addr {
            info!("legacy protocol listening on http://{legacy}");
        }
        if let Some(health) = health_addr {
            info!("health and metrics listening on http://{health}");
        }
        Ok(Self {
            addr,
            legacy_addr,
            health_addr,
            manager,
            stop,
            tasks,
        })
    }

    /// The address of the v1 API.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of the v1 API, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address of the legacy-only listener, if one was asked for.
    pub fn legacy_addr(&self) -> Option<SocketAddr> {
        self.legacy_addr
    }

    /// The address of the health-only listener, if one was asked for.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    /// The lock manager.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// Releases every held lock, tells its holder, lets open connections finish, and stops.
    pub async fn shutdown(self) {
        self.manager.shutdown().await;
        self.stop.cancel();
        let drained = tokio::time::timeout(DRAIN, futures_util::future::join_all(self.tasks)).await;
        if drained.is_err() {
            warn!("connections still open after {DRAIN:?}; closing them");
        }
        info!("stopped");
    }
}

/// The store, and what announces its holders elsewhere (`--publish`), if anything.
type Opened = (Arc<dyn store::Store>, Option<Arc<dyn hooks::Announce>>);

async fn open_store(config: &Config) -> anyhow::Result<Opened> {
    Ok(match config.store_kind() {
        StoreKind::Memory => (Arc::new(store::MemoryStore::new()), None),
        #[cfg(feature = "kubernetes")]
        StoreKind::Kubernetes => {
            // One way: the client, then the publisher on it, then the store and the manager
            // with the publisher as their hooks. Every elector fences the slices of a lock others
            // publish, so it runs a publisher even without --publish (one that publishes nothing).
            let (client, namespace) = kube_api::connect(config.namespace.clone())
                .await
                .context("could not open the kubernetes store")?;
            let publisher = Arc::new(match (config.publish.as_slice(), config.pod_ip) {
                ([], _) | (_, None) => publish::Publisher::fencing_only(client.clone(), &namespace),
                (publications, Some(ip)) => {
                    publish::Publisher::start(client.clone(), &namespace, ip, publications)
                }
            });
            let store = store::KubernetesStore::new(client, &namespace, Some(publisher.clone()));
            (Arc::new(store), Some(publisher))
        }
        #[cfg(not(feature = "kubernetes"))]
        StoreKind::Kubernetes => {
            anyhow::bail!(
                "this elector was built without the kubernetes feature; rebuild with default features"
            )
        }
        #[cfg(feature = "etcd")]
        StoreKind::Etcd => (
            Arc::new(
                store::EtcdStore::connect(&config.etcd_endpoints, &config.etcd_prefix)
                    .await
                    .context("could not open the etcd store")?,
            ),
            None,
        ),
        #[cfg(not(feature = "etcd"))]
        StoreKind::Etcd => {
            anyhow::bail!(
                "this elector was built without the etcd feature; rebuild with default features"
            )
        }
    })
}

/// Binds and serves an optional extra listener; its address when there is one.
async fn serve_extra(
    listen: Option<SocketAddr>,
    flag: &str,
    router: axum::Router,
    stop: &CancellationToken,
    limits: &serve::Limits,
    tasks: &mut Vec<JoinHandle<std::io::Result<()>>>,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("could not listen on {listen} ({flag})"))?;
    let addr = listener.local_addr()?;
    tasks.push(spawn_serve(listener, router, stop.clone(), limits.clone()));
    Ok(Some(addr))
}

fn spawn_serve(
    listener: TcpListener,
    router: axum::Router,
    stop: CancellationToken,
    limits: serve::Limits,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(serve::serve(listener, router, stop, limits))
}
