//! Configuration: command-line flags, each with an environment variable, and the defaults the
//! design fixes (loopback port 13131, ttl 15 s, identity from the pod name).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sync_protocol::LockName;

/// Which store holds the locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// In this process's memory: one machine, the embedded default.
    Memory,
    /// Kubernetes Lease objects.
    Kubernetes,
    /// etcd v3.
    Etcd,
}

/// How the binary writes its log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, as people read them.
    #[default]
    Text,
    /// One JSON object per line, each field a key (`lock`, `holder`, `token`), for a collector.
    Json,
}

/// The stores this build has, in the order `--version` names them. Every build has the memory
/// store; the default features add the other two.
pub const STORES: &[&str] = &[
    "memory",
    #[cfg(feature = "kubernetes")]
    "kubernetes",
    #[cfg(feature = "etcd")]
    "etcd",
];

/// `--version`: the version and the stores, so whoever runs a binary can see what it can do.
fn long_version() -> &'static str {
    static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{} (stores: {})",
            env!("CARGO_PKG_VERSION"),
            STORES.join(", ")
        )
    });
    &VERSION
}

/// The sync-elector sidecar: distributed locks and leader election for the programs in its pod.
#[derive(Debug, Clone, Parser)]
#[command(name = "sync-elector", version, long_version = long_version(), about)]
pub struct Config {
    /// How log lines are written: `text` for people, `json` for a collector (one object a line,
    /// with the lock, holder and token as keys).
    #[arg(long, env = "SYNC_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Address of the v1 and legacy API.
    #[arg(long, env = "SYNC_LISTEN", default_value = "127.0.0.1:13131")]
    pub listen: SocketAddr,

    /// Extra address serving only the legacy API, for the original Go and Rust bindings
    /// (they used 127.0.0.1:8080).
    #[arg(long, env = "SYNC_LEGACY_LISTEN")]
    pub legacy_listen: Option<SocketAddr>,

    /// Extra address serving only /healthz, /readyz and /metrics, for kubelet probes and
    /// Prometheus, which reach the pod's address rather than its loopback (e.g. 0.0.0.0:13132).
    #[arg(long, env = "SYNC_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Allow --listen and --legacy-listen on an address other hosts can reach. Without it the
    /// elector refuses to start on one: anyone who can connect can take and release locks.
    #[arg(long, env = "SYNC_ALLOW_REMOTE")]
    pub allow_remote: bool,

    /// A file holding a bearer token that every lock request must carry
    /// (`Authorization: Bearer <token>`), for pods whose network namespace is shared with
    /// containers that should not touch the locks. Health and metrics stay open.
    #[arg(long, env = "SYNC_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// Where locks live [default: kubernetes in a pod (KUBERNETES_SERVICE_HOST is set), else
    /// memory].
    #[arg(long, env = "SYNC_STORE", value_enum)]
    pub store: Option<StoreKind>,

    /// Namespace of the Lease objects [default: the pod's service-account namespace, else the
    /// kubeconfig context's, else default].
    #[arg(long, env = "SYNC_NAMESPACE")]
    pub namespace: Option<String>,

    /// etcd endpoints, comma-separated, each host:port or http://host:port.
    #[arg(
        long,
        env = "SYNC_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,

    /// Key prefix of the locks in etcd; ends with '/'.
    #[arg(long, env = "SYNC_ETCD_PREFIX", default_value = "/metaparticle-sync/locks/", value_parser = parse_prefix)]
    pub etcd_prefix: String,

    /// This elector's identity as holders show it [default: $POD_NAME, else the host name].
    #[arg(long, env = "SYNC_IDENTITY")]
    pub identity: Option<String>,

    /// Default lock ttl, for acquires that do not name one (e.g. 15s, 1m).
    #[arg(long, env = "SYNC_TTL", default_value = "15s", value_parser = parse_ttl)]
    pub ttl: Duration,

    /// Lock ttl of the legacy protocol (the original elector's 30 s).
    #[arg(long, env = "SYNC_LEGACY_TTL", default_value = "30s", value_parser = parse_ttl)]
    pub legacy_ttl: Duration,

    /// How long a new connection may take to send its first request, and a request its body;
    /// slower clients are cut off. A kept-alive connection may stay idle between requests.
    #[arg(long, env = "SYNC_CLIENT_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub client_timeout: Duration,

    /// Most connections served at once, over all listeners; further ones wait in the kernel's
    /// accept queue until one closes.
    #[arg(long, env = "SYNC_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// How many locks get series of their own on /metrics, labelled `lock`; the locks beyond
    /// share `lock="_other"`. 0 labels none. docs/metrics.md says what each costs.
    #[arg(long, env = "SYNC_METRICS_LOCK_LIMIT", default_value_t = crate::metrics::locks::DEFAULT_LIMIT)]
    pub metrics_lock_limit: usize,

    /// LOCK=SERVICE, or LOCK=SERVICE:PORT: while a holder here holds LOCK, keep the
    /// selector-less Service SERVICE's EndpointSlice listing this pod's IP, and nothing else,
    /// with the Service's ports by name (their targetPort numbers; PORT instead, for a Service
    /// with one port). The Kubernetes store only; docs/kubernetes.md. Repeat the flag, or
    /// separate with commas.
    #[arg(long, env = "SYNC_PUBLISH", value_delimiter = ',')]
    pub publish: Vec<Publication>,

    /// This pod's IP, which --publish lists (set POD_IP from the downward API, status.podIP).
    #[arg(long, env = "POD_IP")]
    pub pod_ip: Option<IpAddr>,
}

/// One `--publish LOCK=SERVICE` (or `LOCK=SERVICE:PORT`): send SERVICE's traffic to whichever
/// pod's elector holds LOCK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The lock whose holder is published.
    pub lock: LockName,
    /// The selector-less Service in the store's namespace.
    pub service: String,
    /// The port the holder serves on, for a Service with one port; without it, each of the
    /// Service's ports is listed with its `targetPort`.
    pub port: Option<u16>,
}

impl FromStr for Publication {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let shape = || {
            format!(
                "{text:?} is not LOCK=SERVICE or LOCK=SERVICE:PORT (such as leader=my-service, or \
                 leader=my-service:8080)"
            )
        };
        let (lock, target) = text.split_once('=').ok_or_else(shape)?;
        let (service, port) = match target.rsplit_once(':') {
            Some((service, port)) => (service, Some(port)),
            None => (target, None),
        };
        let lock = LockName::new(lock.trim()).map_err(|e| format!("in {text:?}: {e}"))?;
        let service = service.trim();
        if !is_dns_label(service) {
            return Err(format!(
                "in {text:?}: {service:?} is not a Service name: up to 63 lower-case letters, \
                 digits and '-', starting with a letter and ending with a letter or digit"
            ));
        }
        let port = match port.map(|p| p.trim().parse::<u16>()) {
            None => None,
            Some(Ok(port)) if port > 0 => Some(port),
            Some(_) => {
                return Err(format!(
                    "in {text:?}: {:?} is not a port: a number from 1 to 65535",
                    port.unwrap_or_default()
                ));
            }
        };
        Ok(Self {
            lock,
            service: service.to_owned(),
            port,
        })
    }
}

/// A DNS-1035 label, the rule for Service names.
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// What is wrong with a configuration, beyond what each flag checks alone. Each message says
/// what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A lock listener is not on loopback, and `--allow-remote` was not given.
    #[error(
        "refusing to serve locks on {addr} ({flag}): other hosts could take and release them. \
         Keep it on 127.0.0.1 (the default), or pass --allow-remote (and protect it with \
         --token-file)"
    )]
    RemoteListen {
        /// The flag that named the address.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// `--publish` without the Kubernetes store.
    #[error(
        "--publish writes Kubernetes EndpointSlices next to the lock's Lease; use it with \
         --store kubernetes"
    )]
    PublishNeedsKubernetes,
    /// `--publish` without this pod's IP.
    #[error(
        "--publish needs this pod's IP: set POD_IP from the downward API \
         (valueFrom.fieldRef.fieldPath: status.podIP), or pass --pod-ip"
    )]
    PublishNeedsPodIp,
    /// Two `--publish` name the same Service.
    #[error("--publish names the Service {0:?} twice: one Service follows one lock")]
    ServiceTwice(String),
    /// The `--token-file` cannot be used; the source says why.
    #[error("the token file {} is unusable", path.display())]
    TokenFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        #[source]
        source: sync_protocol::TokenFileError,
    },
}

impl Config {
    /// The identity to use: the flag, else `POD_NAME`, else the host name.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
    }

    /// The store to use: the flag, else Kubernetes when running in a pod, else memory.
    pub fn store_kind(&self) -> StoreKind {
        self.store.unwrap_or_else(|| {
            if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
                StoreKind::Kubernetes
            } else {
                StoreKind::Memory
            }
        })
    }

    /// Checks what the flags cannot check alone: the lock API stays on loopback unless
    /// `--allow-remote` says otherwise, and `--publish` has what it needs.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.check_publish()?;
        if self.allow_remote {
            return Ok(());
        }
        for (flag, addr) in [
            ("--listen", Some(self.listen)),
            ("--legacy-listen", self.legacy_listen),
        ] {
            if let Some(addr) = addr
                && !addr.ip().is_loopback()
            {
                return Err(ConfigError::RemoteListen { flag, addr });
            }
        }
        Ok(())
    }

    /// `--publish` needs the Kubernetes store, this pod's IP, and one lock per Service.
    fn check_publish(&self) -> Result<(), ConfigError> {
        if self.publish.is_empty() {
            return Ok(());
        }
        if self.store_kind() != StoreKind::Kubernetes {
            return Err(ConfigError::PublishNeedsKubernetes);
        }
        if self.pod_ip.is_none() {
            return Err(ConfigError::PublishNeedsPodIp);
        }
        let mut services = std::collections::HashSet::new();
        for publication in &self.publish {
            if !services.insert(&publication.service) {
                return Err(ConfigError::ServiceTwice(publication.service.clone()));
            }
        }
        Ok(())
    }

    /// Reads the bearer token from `--token-file`, if one is given.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        sync_protocol::read_token_file(path)
            .map(Some)
            .map_err(|source| ConfigError::TokenFile {
                path: path.clone(),
                source,
            })
    }

    /// A configuration with every default, listening on `listen` (tests use port 0).
    pub fn local(listen: SocketAddr) -> Self {
        Self::parse_from([
            "sync-elector",
            "--listen",
            &listen.to_string(),
            "--store",
            "memory",
        ])
    }
}

fn parse_prefix(text: &str) -> Result<String, String> {
    if text.ends_with('/') {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} must end with '/', so that one lock's keys never share another's prefix"
        ))
    }
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration with its unit, such as 10s or 500ms"))?;
    if timeout < Duration::from_millis(100) {
        return Err(format!("{text} is too short: give clients at least 100ms"));
    }
    Ok(timeout)
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration with its unit, such as 15s or 500ms"))?;
    let max = Duration::from_secs(sync_protocol::MAX_TTL_SECONDS);
    if ttl.subsec_nanos() != 0 {
        return Err(format!(
            "{text} is not whole seconds: a ttl is whole seconds, as in a Kubernetes Lease"
        ));
    }
    if ttl < Duration::from_secs(1) || ttl > max {
        return Err(format!(
            "{text} is out of range: a ttl is 1s to {}",
            humantime::format_duration(max)
        ));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_the_stores_of_this_build() {
        let err = Config::try_parse_from(["sync-elector", "--version"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
        let shown = err.to_string();
        assert!(shown.contains("stores: memory"), "{shown}");
        assert_eq!(
            shown.contains("kubernetes"),
            cfg!(feature = "kubernetes"),
            "{shown}"
        );
        assert_eq!(shown.contains("etcd"), cfg!(feature = "etcd"), "{shown}");
    }

    #[test]
    fn defaults_match_the_design() {
        let c = Config::try_parse_from(["sync-elector"]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:13131".parse().unwrap());
        assert_eq!(c.ttl, Duration::from_secs(15));
        assert_eq!(c.legacy_ttl, Duration::from_secs(30));
        assert_eq!(c.store, None);
        assert_eq!(c.namespace, None);
        assert_eq!(c.legacy_listen, None);
    }

    #[test]
    fn the_lock_api_stays_on_loopback_unless_allowed() {
        let parse =
            |args: &[&str]| Config::try_parse_from(["sync-elector"].iter().chain(args)).unwrap();
        assert!(parse(&[]).check().is_ok());
        assert!(parse(&["--listen", "[::1]:13131"]).check().is_ok());
        let err = parse(&["--listen", "0.0.0.0:13131"])
            .check()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--allow-remote") && err.contains("0.0.0.0:13131"),
            "{err}"
        );
        let err = parse(&["--legacy-listen", "10.0.0.7:8080"])
            .check()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--legacy-listen"), "{err}");
        assert!(
            parse(&["--listen", "0.0.0.0:13131", "--allow-remote"])
                .check()
                .is_ok()
        );
        assert!(
            parse(&["--health-listen", "0.0.0.0:13132"]).check().is_ok(),
            "probes reach the pod's address"
        );
    }

    #[test]
    fn a_token_file_must_hold_a_token() {
        let dir = sync_testkit::temp_dir("config-token");
        let file = dir.join("token");
        let parse = |path: &std::path::Path| {
            Config::try_parse_from(["sync-elector", "--token-file", path.to_str().unwrap()])
                .unwrap()
        };
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(parse(&file).token().unwrap().as_deref(), Some("s3cret"));
        std::fs::write(&file, " \n").unwrap();
        let err = parse(&file).token().unwrap_err();
        assert!(
            matches!(&err, ConfigError::TokenFile { source: sync_protocol::TokenFileError::Empty, path } if *path == file),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
        let missing = dir.join("missing");
        let err = parse(&missing).token().unwrap_err();
        // The cause stays reachable: the file error, then the operating system's.
        let cause = std::error::Error::source(&err).expect("the file's error");
        assert_eq!(cause.to_string(), "could not read it");
        let io = cause.source().expect("the operating system's error");
        assert!(io.to_string().contains("No such file"), "{io}");
        assert_eq!(
            Config::local("127.0.0.1:0".parse().unwrap())
                .token()
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_publication_is_lock_service_and_port() {
        let p: Publication = "leader=my-service:8080".parse().unwrap();
        assert_eq!(p.lock.as_str(), "leader");
        assert_eq!((p.service.as_str(), p.port), ("my-service", Some(8080)));
        let p: Publication = "leader=my-service".parse().unwrap();
        assert_eq!((p.service.as_str(), p.port), ("my-service", None));
        for (bad, says) in [
            ("leader", "LOCK=SERVICE or LOCK=SERVICE:PORT"),
            ("leader=", "not a Service name"),
            ("leader=my-service:", "not a port"),
            ("Leader=svc:80", "invalid lock name"),
            ("leader=My_Service:80", "not a Service name"),
            ("leader=9svc:80", "not a Service name"),
            ("leader=svc:0", "not a port"),
            ("leader=svc:http", "not a port"),
            ("leader=svc:70000", "not a port"),
        ] {
            let err = bad.parse::<Publication>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn publishing_needs_the_kubernetes_store_a_pod_ip_and_one_lock_per_service() {
        let parse =
            |args: &[&str]| Config::try_parse_from(["sync-elector"].iter().chain(args)).unwrap();
        let kube = ["--store", "kubernetes", "--publish", "a=svc:80"];
        let err = parse(&kube).check().unwrap_err().to_string();
        assert!(err.contains("POD_IP"), "{err}");
        let with_ip = [&kube[..], &["--pod-ip", "10.1.2.3"]].concat();
        assert!(parse(&with_ip).check().is_ok());
        let err = parse(&[
            "--store",
            "memory",
            "--publish",
            "a=svc:80",
            "--pod-ip",
            "10.1.2.3",
        ])
        .check()
        .unwrap_err()
        .to_string();
        assert!(err.contains("--store kubernetes"), "{err}");
        let twice = [&with_ip[..], &["--publish", "b=svc:81"]].concat();
        let err = parse(&twice).check().unwrap_err();
        assert!(
            matches!(&err, ConfigError::ServiceTwice(s) if s == "svc"),
            "{err}"
        );
        let c = parse(&[&with_ip[..], &["--publish", "b=other:81,c=third:82"]].concat());
        assert_eq!(c.publish.len(), 3);
        assert!(c.check().is_ok());
    }

    #[test]
    fn durations_need_units_and_a_range() {
        let err = Config::try_parse_from(["sync-elector", "--ttl", "15"]).unwrap_err();
        assert!(err.to_string().contains("15s"), "{err}");
        let err = Config::try_parse_from(["sync-elector", "--ttl", "2h"]).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        let err = Config::try_parse_from(["sync-elector", "--ttl", "1500ms"]).unwrap_err();
        assert!(err.to_string().contains("whole seconds"), "{err}");
        let c = Config::try_parse_from(["sync-elector", "--ttl", "2m"]).unwrap();
        assert_eq!(c.ttl, Duration::from_secs(120));
    }
}
