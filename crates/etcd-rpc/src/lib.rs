//! A small etcd v3 client: the KV, Lease, Watch and Lock calls this project makes, over gRPC.
//!
//! It exists so that building the elector needs nothing but the Rust toolchain. The usual etcd
//! client crates compile etcd's `.proto` files in their build scripts, which needs `protoc`
//! installed on the building machine; here the few messages we use are declared in Rust
//! ([`messages`]) and the calls go through tonic's generic client, so there is no build script.
//! `docs/decisions.md` compares the options.
//!
//! | module | job |
//! | --- | --- |
//! | [`endpoint`] | what an etcd endpoint may look like, checked with a message that says what to fix |
//! | [`messages`] | the protobuf messages, tag for tag as in etcd's `.proto` files |
//! | this file | [`Client`]: one balanced channel to every endpoint, and one method per call |
//! | `stream.rs` | the two long-lived calls: [`Watch`] and [`KeepAlive`] |
//!
//! ```no_run
//! # async fn run() -> Result<(), etcd_rpc::Error> {
//! use etcd_rpc::{Client, Options, PutRequest, RangeRequest};
//!
//! let client = Client::connect(&["127.0.0.1:2379"], &Options::default())?;
//! client.put(PutRequest { key: b"greeting".to_vec(), value: b"hello".to_vec(), ..Default::default() }).await?;
//! let read = client.range(RangeRequest { key: b"greeting".to_vec(), ..Default::default() }).await?;
//! assert_eq!(read.kvs[0].value, b"hello");
//! # Ok(()) }
//! ```

pub mod endpoint;
pub mod messages;
mod stream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

pub use messages::*;
pub use stream::{KeepAlive, Watch};
/// The gRPC status a failed [`Error::Call`] carries, and its code, for callers that tell failures apart.
pub use tonic::{Code, Status};

/// What went wrong in a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An endpoint is not `host:port` or `http://host:port`; the message says what to fix.
    #[error("{0}")]
    InvalidEndpoint(String),
    /// No endpoints were given.
    #[error("no etcd endpoints given; name at least one, as 127.0.0.1:2379")]
    NoEndpoints,
    /// The call failed: etcd refused it, or no member could be reached in time.
    #[error("{call}: {status}")]
    Call {
        /// The gRPC method, as `KV/Range`.
        call: &'static str,
        /// What etcd or the transport answered.
        status: Box<tonic::Status>,
    },
    /// A stream ended before its first answer.
    #[error("{call}: the stream ended before etcd answered")]
    StreamEnded {
        /// The gRPC method.
        call: &'static str,
    },
}

/// Told of every unary call and every keep-alive when it ends: to count them, time them, or log
/// them.
pub trait Observe: Send + Sync + 'static {
    /// `call` (as `KV/Range`) took `took` and failed with `error`, or succeeded when `None`.
    fn observe(&self, call: &'static str, error: Option<&Error>, took: Duration);
}

/// Connection settings.
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// How long a new connection to a member may take.
    pub connect_timeout: Duration,
    /// How long a call may wait for its answer (for a stream: for its first answer); `None`
    /// for as long as etcd takes, which a [`Client::lock`] that waits its turn needs.
    pub request_timeout: Option<Duration>,
    /// HTTP/2 pings on an open connection, so a dead member is noticed while a stream is quiet:
    /// the interval, and how long a ping may go unanswered.
    pub keep_alive: (Duration, Duration),
    /// Told of every call; none by default.
    pub observer: Option<Arc<dyn Observe>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("observer", &self.observer.as_ref().map(|_| "set"))
            .finish()
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Some(Duration::from_secs(5)),
            keep_alive: (Duration::from_secs(2), Duration::from_secs(2)),
            observer: None,
        }
    }
}

/// A client of one etcd cluster. Cheap to clone: clones share the connections.
///
/// Calls are spread over the endpoints, and a member that cannot be reached is left out until it
/// can; a call that was on its way to a member when it died fails, and the caller may retry it.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    observer: Option<Arc<dyn Observe>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// Tells `observer`, if any, how the call that began at `sent` ended, and hands its answer on.
fn observed<T>(
    observer: Option<&Arc<dyn Observe>>,
    call: &'static str,
    sent: Instant,
    answer: Result<T, Error>,
) -> Result<T, Error> {
    if let Some(observer) = observer {
        observer.observe(call, answer.as_ref().err(), sent.elapsed());
    }
    answer
}

impl Error {
    /// `call` failed with `status`.
    fn call(call: &'static str, status: tonic::Status) -> Self {
        Error::Call {
            call,
            status: Box::new(status),
        }
    }
}

/// Waits until the channel can take a call of `call`: a member is connected.
async fn ready(grpc: &mut Grpc<Channel>, call: &'static str) -> Result<(), Error> {
    grpc.ready()
        .await
        .map_err(|err| Error::call(call, tonic::Status::unavailable(err.to_string())))
}

impl Client {
    /// A client of the cluster at `endpoints` (`host:port` or `http://host:port`). Connections
    /// open on first use, so this fails only on malformed endpoints. Needs a tokio runtime.
    pub fn connect(endpoints: &[impl AsRef<str>], options: &Options) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let endpoints = endpoints
            .iter()
            .map(|e| {
                let url = endpoint::url(e.as_ref()).map_err(Error::InvalidEndpoint)?;
                let endpoint = Endpoint::from_shared(url.clone())
                    .map_err(|err| Error::InvalidEndpoint(format!("{url}: {err}")))?;
                let endpoint = endpoint
                    .connect_timeout(options.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(options.keep_alive.0)
                    .keep_alive_timeout(options.keep_alive.1);
                Ok(match options.request_timeout {
                    Some(timeout) => endpoint.timeout(timeout),
                    None => endpoint,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            channel: Channel::balance_list(endpoints.into_iter()),
            observer: options.observer.clone(),
        })
    }

    /// Reads a key or a range of keys.
    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse, Error> {
        self.unary("KV/Range", "/etcdserverpb.KV/Range", request)
            .await
    }

    /// Writes a key.
    pub async fn put(&self, request: PutRequest) -> Result<PutResponse, Error> {
        self.unary("KV/Put", "/etcdserverpb.KV/Put", request).await
    }

    /// Runs a transaction: its comparisons and then one of its branches, atomically.
    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, Error> {
        self.unary("KV/Txn", "/etcdserverpb.KV/Txn", request).await
    }

    /// Writes `request`'s key only if it does not exist: the answer is the revision that
    /// created it, or `None` when the key was there already (nothing is written).
    pub async fn create(&self, request: PutRequest) -> Result<Option<i64>, Error> {
        let absent = Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: request.key.clone(),
            create_revision: Some(0),
        };
        let response = self
            .txn(TxnRequest {
                compare: vec![absent],
                success: vec![RequestOp {
                    request_put: Some(request),
                    ..Default::default()
                }],
                failure: Vec::new(),
            })
            .await?;
        Ok(response
            .succeeded
            .then(|| response.header.map_or(0, |h| h.revision)))
    }

    /// Deletes one key: `Ok(true)` when it was there.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<bool, Error> {
        let request = DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        };
        let response: DeleteRangeResponse = self
            .unary("KV/DeleteRange", "/etcdserverpb.KV/DeleteRange", request)
            .await?;
        Ok(response.deleted > 0)
    }

    /// Grants a lease of `ttl` seconds.
    pub async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrantResponse, Error> {
        let request = LeaseGrantRequest { ttl, id: 0 };
        self.unary(
            "Lease/LeaseGrant",
            "/etcdserverpb.Lease/LeaseGrant",
            request,
        )
        .await
    }

    /// Revokes a lease, deleting its keys.
    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse, Error> {
        let request = LeaseRevokeRequest { id };
        self.unary(
            "Lease/LeaseRevoke",
            "/etcdserverpb.Lease/LeaseRevoke",
            request,
        )
        .await
    }

    /// How long a lease has left.
    pub async fn lease_time_to_live(&self, id: i64) -> Result<LeaseTimeToLiveResponse, Error> {
        let request = LeaseTimeToLiveRequest { id, keys: false };
        self.unary(
            "Lease/LeaseTimeToLive",
            "/etcdserverpb.Lease/LeaseTimeToLive",
            request,
        )
        .await
    }

    /// Renews a lease once, on a keep-alive stream of its own: `Some(seconds)` it now lives,
    /// or `None` when the lease is gone (expired or revoked).
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<Option<i64>, Error> {
        // Opening the stream carries the one keep-alive; the stream ends with this call.
        self.lease_keep_alive(id).keep_alive().await
    }

    /// A keep-alive stream for a lease, to renew it again and again on one stream. It opens
    /// with the first [`KeepAlive::keep_alive`].
    pub fn lease_keep_alive(&self, id: i64) -> KeepAlive {
        KeepAlive::new(self.grpc(), id, self.observer.clone())
    }

    /// Starts a watch, and waits until etcd has created it: every change from
    /// `request.start_revision` on (or from now, for 0) arrives on the returned [`Watch`].
    pub async fn watch(&self, request: WatchCreateRequest) -> Result<Watch, Error> {
        Watch::open(self.grpc(), request).await
    }

    /// Waits for and takes the v3lock `name` for the session `lease` (etcd's Lock service).
    /// The wait counts against [`Options::request_timeout`].
    pub async fn lock(&self, name: &[u8], lease: i64) -> Result<LockResponse, Error> {
        let request = LockRequest {
            name: name.to_vec(),
            lease,
        };
        self.unary("Lock/Lock", "/v3lockpb.Lock/Lock", request)
            .await
    }

    /// Releases a v3lock by the key [`Client::lock`] returned.
    pub async fn unlock(&self, key: &[u8]) -> Result<UnlockResponse, Error> {
        let request = UnlockRequest { key: key.to_vec() };
        self.unary("Lock/Unlock", "/v3lockpb.Lock/Unlock", request)
            .await
    }

    fn grpc(&self) -> Grpc<Channel> {
        Grpc::new(self.channel.clone())
    }

    async fn unary<Req, Res>(
        &self,
        call: &'static str,
        path: &'static str,
        request: Req,
    ) -> Result<Res, Error>
    where
        Req: prost::Message + Send + Sync + 'static,
        Res: prost::Message + Default + Send + Sync + 'static,
    {
        let sent = Instant::now();
        let answer = async {
            let mut grpc = self.grpc();
            ready(&mut grpc, call).await?;
            let response = grpc
                .unary(
                    tonic::Request::new(request),
                    PathAndQuery::from_static(path),
                    ProstCodec::default(),
                )
                .await
                .map_err(|status| Error::call(call, status))?;
            Ok(response.into_inner())
        }
        .await;
        observed(self.observer.as_ref(), call, sent, answer)
    }
}

/// `prefix` as a range's first key, and the end of the range of every key that starts with it.
fn prefix_range(prefix: impl Into<Vec<u8>>) -> (Vec<u8>, Vec<u8>) {
    let key = prefix.into();
    let end = prefix_end(&key);
    (key, end)
}

impl RangeRequest {
    /// A read of every key that starts with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let (key, range_end) = prefix_range(prefix);
        Self {
            key,
            range_end,
            ..Default::default()
        }
    }
}

impl WatchCreateRequest {
    /// A watch of every key that starts with `prefix`, from now.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let (key, range_end) = prefix_range(prefix);
        Self {
            key,
            range_end,
            ..Default::default()
        }
    }
}

/// The end of the range of every key that starts with `prefix`: `prefix` with its last byte
/// below 0xff raised by one (etcd's `clientv3.GetPrefixRangeEnd`). All keys for an empty or
/// all-0xff prefix.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // "\0" is etcd's "to the end of the key space".
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_last_byte_raised() {
        assert_eq!(prefix_end(b"/locks/"), b"/locks0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), [0]);
        assert_eq!(prefix_end(b""), [0]);
    }

    #[tokio::test]
    async fn malformed_endpoints_are_refused_before_any_connection() {
        let no_port = Client::connect(&["etcd"], &Options::default()).unwrap_err();
        assert!(no_port.to_string().contains("port"), "{no_port}");
        let none: [&str; 0] = [];
        assert!(matches!(
            Client::connect(&none, &Options::default()),
            Err(Error::NoEndpoints)
        ));
    }
}
