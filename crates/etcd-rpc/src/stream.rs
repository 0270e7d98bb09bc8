//! The two long-lived calls: a watch, and a lease's keep-alive stream. Both are bidirectional
//! gRPC streams whose request side we keep open through a channel: etcd ends the call when the
//! client closes its side.

use std::sync::Arc;
use std::time::Instant;

use futures_util::Stream;
use http::uri::PathAndQuery;
use tokio::sync::mpsc;
use tonic::Streaming;
use tonic::client::Grpc;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

use crate::messages::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, WatchCreateRequest, WatchRequest,
    WatchRequestUnion, WatchResponse,
};
use crate::{Error, Observe};

/// The request side of a stream: whatever is sent on the channel, open until it is dropped.
fn requests<T: Send + 'static>(receiver: mpsc::UnboundedReceiver<T>) -> impl Stream<Item = T> {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

/// Opens a bidirectional call whose first request is already queued on `receiver`.
async fn open<Req, Res>(
    mut grpc: Grpc<Channel>,
    call: &'static str,
    path: &'static str,
    receiver: mpsc::UnboundedReceiver<Req>,
) -> Result<Streaming<Res>, Error>
where
    Req: prost::Message + Send + Sync + 'static,
    Res: prost::Message + Default + Send + Sync + 'static,
{
    crate::ready(&mut grpc, call).await?;
    let response = grpc
        .streaming(
            tonic::Request::new(requests(receiver)),
            PathAndQuery::from_static(path),
            ProstCodec::default(),
        )
        .await
        .map_err(|status| Error::call(call, status))?;
    Ok(response.into_inner())
}

/// A watch that etcd has created. Dropping it ends the watch.
#[derive(Debug)]
pub struct Watch {
    responses: Streaming<WatchResponse>,
    watch_id: i64,
    /// Held only to keep the request side open.
    _requests: mpsc::UnboundedSender<WatchRequest>,
}

impl Watch {
    const CALL: &'static str = "Watch/Watch";

    pub(crate) async fn open(
        grpc: Grpc<Channel>,
        create: WatchCreateRequest,
    ) -> Result<Self, Error> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let request = WatchRequest {
            request_union: Some(WatchRequestUnion::CreateRequest(create)),
        };
        sender.send(request).expect("the receiver is still here");
        let mut responses: Streaming<WatchResponse> =
            open(grpc, Self::CALL, "/etcdserverpb.Watch/Watch", receiver).await?;
        let created = next(&mut responses, Self::CALL)
            .await?
            .ok_or(Error::StreamEnded { call: Self::CALL })?;
        if created.canceled || !created.created {
            let reason = if created.cancel_reason.is_empty() {
                "etcd did not create the watch".to_owned()
            } else {
                created.cancel_reason
            };
            return Err(Error::call(
                Self::CALL,
                tonic::Status::failed_precondition(reason),
            ));
        }
        Ok(Self {
            responses,
            watch_id: created.watch_id,
            _requests: sender,
        })
    }

    /// The id etcd gave this watch.
    pub fn watch_id(&self) -> i64 {
        self.watch_id
    }

    /// The next message: events, a progress notification, or the watch's cancellation (see
    /// [`WatchResponse::compact_revision`]). `None` when etcd ended the stream.
    pub async fn message(&mut self) -> Result<Option<WatchResponse>, Error> {
        next(&mut self.responses, Self::CALL).await
    }
}

/// A lease's keep-alive stream, opened on the first keep-alive and opened again after an error.
pub struct KeepAlive {
    grpc: Grpc<Channel>,
    id: i64,
    observer: Option<Arc<dyn Observe>>,
    open: Option<(
        mpsc::UnboundedSender<LeaseKeepAliveRequest>,
        Streaming<LeaseKeepAliveResponse>,
    )>,
}

impl std::fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepAlive")
            .field("id", &self.id)
            .field("open", &self.open.is_some())
            .finish_non_exhaustive()
    }
}

impl KeepAlive {
    const CALL: &'static str = "Lease/LeaseKeepAlive";

    pub(crate) fn new(grpc: Grpc<Channel>, id: i64, observer: Option<Arc<dyn Observe>>) -> Self {
        Self {
            grpc,
            id,
            observer,
            open: None,
        }
    }

    /// The lease this stream renews.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Renews the lease: `Some(seconds)` it now lives, or `None` when it is gone (expired or
    /// revoked).
    pub async fn keep_alive(&mut self) -> Result<Option<i64>, Error> {
        let sent = Instant::now();
        let answer = self.exchange().await;
        match crate::observed(self.observer.as_ref(), Self::CALL, sent, answer) {
            Ok(ttl) => Ok((ttl > 0).then_some(ttl)),
            Err(err) => {
                self.open = None;
                Err(err)
            }
        }
    }

    /// Sends one keep-alive, on the open stream or a new one, and reads its answer's ttl.
    async fn exchange(&mut self) -> Result<i64, Error> {
        let request = LeaseKeepAliveRequest { id: self.id };
        let sent = matches!(&self.open, Some((sender, _)) if sender.send(request.clone()).is_ok());
        if !sent {
            let (sender, receiver) = mpsc::unbounded_channel();
            sender.send(request).expect("the receiver is still here");
            let path = "/etcdserverpb.Lease/LeaseKeepAlive";
            let responses = open(self.grpc.clone(), Self::CALL, path, receiver).await?;
            self.open = Some((sender, responses));
        }
        let (_, responses) = self.open.as_mut().expect("opened above");
        let answer = next(responses, Self::CALL)
            .await?
            .ok_or(Error::StreamEnded { call: Self::CALL })?;
        Ok(answer.ttl)
    }
}

async fn next<T>(responses: &mut Streaming<T>, call: &'static str) -> Result<Option<T>, Error> {
    responses
        .message()
        .await
        .map_err(|status| Error::call(call, status))
}
