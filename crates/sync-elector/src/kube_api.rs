//! One way to talk to the Kubernetes API, for the Kubernetes store (its Leases, Events and
//! permission checks) and the leader-only Service: connecting, one timeout for every request,
//! one wording of what went wrong, one count of every request on `/metrics`, and one
//! compare-and-set write.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use kube::Resource;
use kube::api::{Api, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::{Instant, timeout};
use tracing::info;

use crate::metrics::store::{self as series, Outcome};

/// How long one API request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the elector could not set up its Kubernetes client.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Neither the in-cluster configuration nor a kubeconfig was found.
    #[error("no Kubernetes configuration: run in a pod with a service account, or set KUBECONFIG")]
    NoConfig(#[source] kube::config::InferConfigError),
    /// The configuration was found but the client could not be built from it.
    #[error("could not create a Kubernetes client from the configuration")]
    Client(#[source] kube::Error),
}

/// Connects with the in-cluster configuration, else `KUBECONFIG` (or `~/.kube/config`). Returns
/// the client and the namespace to work in: `namespace`, else the pod's service-account
/// namespace (or the kubeconfig context's), else `default`.
pub async fn connect(namespace: Option<String>) -> Result<(kube::Client, String), ConnectError> {
    let config = kube::Config::infer()
        .await
        .map_err(ConnectError::NoConfig)?;
    let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
    let url = config.cluster_url.to_string();
    let client = client(config).map_err(ConnectError::Client)?;
    info!(%url, %namespace, "using the Kubernetes API");
    Ok((client, namespace))
}

/// How often an idle HTTP/2 connection to the API server is pinged, and how long a ping may go
/// unanswered before the connection counts as dead and the next request opens a new one (as
/// client-go's `ReadIdleTimeout` and `PingTimeout`, 30 s and 15 s).
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// Idle HTTP/1.1 connections kept to an API server that does not speak HTTP/2 (a plain-HTTP
/// endpoint such as `kubectl proxy`, or the test server). Each request in flight there needs a
/// connection of its own, and each connection kept costs about 30 KiB of buffers: a burst of 64
/// acquires left 64 of them open for 90 s, 2 MiB. Connections beyond this many close once idle;
/// a steady load reuses them. Over HTTP/2, every request shares one connection.
const MAX_IDLE_CONNECTIONS: usize = 16;

/// kube's client stack, with two changes: it offers HTTP/2 (ALPN `h2`, then `http/1.1`), and its
/// TCP connections set `TCP_NODELAY`, as client-go's do.
///
/// kube alone speaks HTTP/1.1 and keeps an idle connection for 90 s. An elector waiting for a
/// lock has its watch on one connection and nothing else to send, so after a long hold the write
/// that takes the released lock went out on a new connection: a TCP and TLS handshake, and, with
/// Nagle's algorithm on, a wait for the server's delayed acknowledgement. The hand-over after a
/// 100 s hold took 61 ms, against 8 to 17 ms back to back; with `TCP_NODELAY`, 16.6 ms; over
/// HTTP/2 as well, 12.0 ms (docs/performance.md, "Hand-over after a long hold"). Over HTTP/2
/// every request shares the connection the watch keeps busy, so there is no new connection to
/// wait for; pings find a dead one. Behind a proxy, kube's stack is used unchanged.
fn client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    use kube::client::ConfigExt;
    use kube::client::retry::RetryPolicy;
    use tower::{BoxError, ServiceBuilder};

    if config.proxy_url.is_some() {
        return kube::Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    let tls = match &config.tls_server_name {
        Some(name) => tls.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            name.clone().try_into().map_err(|err| {
                kube::Error::RustlsTls(kube::client::RustlsTlsError::InvalidServerName(err))
            })?,
        )),
        None => tls,
    };
    let https = tls.enable_all_versions().wrap_connector(http);
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_INTERVAL)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS)
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| tower::retry::RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// What went wrong with one request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The API answered with an error status.
    #[error("the Kubernetes API answered {code} {reason}: {message}")]
    Status {
        /// The HTTP status code.
        code: u16,
        /// The status's reason (`Forbidden`, `Conflict`, ...).
        reason: String,
        /// The API server's message.
        message: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The API could not be reached, or its answer could not be read.
    #[error("could not reach the Kubernetes API: {0}")]
    Unreachable(#[source] kube::Error),
    /// No answer within [`REQUEST_TIMEOUT`].
    #[error("the Kubernetes API did not answer within {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
}

impl From<kube::Error> for RequestError {
    fn from(err: kube::Error) -> Self {
        match &err {
            kube::Error::Api(status) => Self::Status {
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
                source: err,
            },
            _ => Self::Unreachable(err),
        }
    }
}

impl RequestError {
    /// The HTTP status the API answered, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The `result` label of the store's request series.
    fn outcome(&self) -> Outcome {
        match self {
            Self::Status { code: 409, .. } => Outcome::Conflict,
            Self::Status { code: 404, .. } => Outcome::NotFound,
            Self::Status { code: 403, .. } => Outcome::Forbidden,
            Self::Status { .. } => Outcome::Error,
            Self::Unreachable(_) => Outcome::Unreachable,
            Self::TimedOut(_) => Outcome::Timeout,
        }
    }
}

/// Sends one request, `verb` on `resource` (as RBAC names them: `get`, `leases`), bounded by
/// [`REQUEST_TIMEOUT`], and counts it on `/metrics`.
pub async fn send<T>(
    resource: &'static str,
    verb: &'static str,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, RequestError> {
    let sent = Instant::now();
    let answer = match timeout(REQUEST_TIMEOUT, request).await {
        Ok(answer) => answer.map_err(RequestError::from),
        Err(_) => Err(RequestError::TimedOut(REQUEST_TIMEOUT)),
    };
    let outcome = answer
        .as_ref()
        .map_or_else(RequestError::outcome, |_| Outcome::Ok);
    series::observe("kubernetes", resource, verb, outcome, sent.elapsed());
    answer
}

/// Writes `object` compare-and-set: creates it when `create`, else replaces it on the
/// `resourceVersion` it carries. `Ok(None)` when someone else wrote first (`409`): read again,
/// never overwrite.
pub async fn write<K>(api: &Api<K>, object: &K, create: bool) -> Result<Option<K>, RequestError>
where
    K: Resource + k8s_openapi::Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let params = PostParams::default();
    let resource = <K as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    let written = if create {
        send(resource, "create", api.create(&params, object)).await
    } else {
        let name = object.meta().name.clone().unwrap_or_default();
        send(resource, "update", api.replace(&name, &params, object)).await
    };
    match written {
        Ok(written) => Ok(Some(written)),
        Err(err) if err.code() == Some(409) => Ok(None),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_answer_keeps_its_status_and_its_cause() {
        let status = kube::core::Status::failure("leases is forbidden", "Forbidden").with_code(403);
        let err = RequestError::from(kube::Error::Api(status.boxed()));
        assert_eq!(err.code(), Some(403));
        assert_eq!(
            err.to_string(),
            "the Kubernetes API answered 403 Forbidden: leases is forbidden"
        );
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(
            RequestError::TimedOut(REQUEST_TIMEOUT).to_string(),
            "the Kubernetes API did not answer within 10s"
        );
    }
}
