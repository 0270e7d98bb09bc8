//! Serves a router on a listener: HTTP/1.1 for every client, and HTTP/2 without TLS (prior
//! knowledge) for clients such as ours, which keep every request and every held lease's event
//! stream on one connection. On stop: no new connections, and open ones finish gracefully.
//!
//! Limits against hostile or broken clients: at most `max_connections` at once (over every
//! listener; the rest wait in the kernel's accept queue), and a connection that has not sent a
//! whole request head within the client timeout is closed. Once it has, it may idle between
//! requests as long as it likes: the original bindings poll every 10 s on one connection. A
//! connection the elector ends lingers ([`crate::linger`]), so that a client still sending a
//! body it refused reads the answer rather than a reset.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::Service;
use tracing::{debug, warn};

use crate::linger::Lingering;

/// Streams one HTTP/2 connection may carry: a client holding many locks keeps an event stream
/// open for each, on one connection (hyper's default is 200).
const MAX_STREAMS: u32 = 1 << 20;

/// How often an idle HTTP/2 connection is pinged, so a peer that vanished without closing its
/// socket is noticed (a peer that exits closes its socket and is noticed at once).
const PING_EVERY: Duration = Duration::from_secs(5);

/// The router's answer to one request, boxed. hyper keeps a request's future inline in the task
/// that serves its stream, sized for the largest state, for as long as the stream is open; an
/// event stream is open as long as its lease is held. The router's own future carries the whole
/// request, some 370 bytes that every held lease would keep. Boxed, the task keeps a pointer,
/// and the box is freed as soon as the response has begun.
type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// What every listener of one elector shares.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections that may be open at once.
    pub connections: Arc<Semaphore>,
    /// How long a new connection may take to send its first request head.
    pub first_request: Duration,
}

impl Limits {
    /// At most `max_connections` at once; first requests within `first_request`.
    pub fn new(max_connections: u32, first_request: Duration) -> Self {
        Self {
            connections: Arc::new(Semaphore::new(max_connections as usize)),
            first_request,
        }
    }
}

/// Serves `router` on `listener` until `stop`, then waits for open connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    limits: Limits,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No header-read timeout over HTTP/1.1: hyper counts a kept-alive connection's idle time
    // against it, and the original bindings poll every 10 s on one connection; a timeout would
    // close it just as they reuse it.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        // h2 counts the streams it resets itself over a connection's whole life and drops the
        // connection at 1024, a guard against floods from untrusted peers; a client that takes
        // and releases locks all day on one connection crosses it in normal work.
        .max_local_error_reset_streams(None)
        .keep_alive_interval(PING_EVERY)
        .keep_alive_timeout(PING_EVERY * 2);
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = limits.connections.clone().acquire_owned() => {
                permit.expect("the connection semaphore is never closed")
            }
        };
        let (socket, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, for instance: wait a moment rather than spin.
                    warn!(%err, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        // Marks the connection as having sent a whole request head, on its first request.
        let spoke = Arc::new(AtomicBool::new(false));
        let marker = spoke.clone();
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            marker.store(true, Ordering::Relaxed);
            // A router is always ready: it is called without asking.
            Box::pin(router.clone().call(request)) as Answer
        });
        let first_request = limits.first_request;
        // The permit goes with the socket: a lingering connection still counts under the cap.
        let socket = Lingering::new(socket, permit, spoke.clone(), first_request);
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(socket), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = &mut connection => ended,
                () = tokio::time::sleep(first_request) => {
                    if !spoke.load(Ordering::Relaxed) {
                        debug!(%peer, "closing a connection that sent no request in {first_request:?}");
                        return;
                    }
                    connection.await
                }
            };
            if let Err(err) = ended {
                debug!(%peer, %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
