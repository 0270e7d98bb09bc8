//! The connection to the elector: its address, the HTTP client, and the protocol's requests.
//!
//! This is the bottom of the crate: it knows nothing of locks or elections. The layers go one
//! way, `client` ← `heartbeat` ← `lock` ← `election`, and each adds its own constructor to
//! [`Client`] (`Client::lock` in lock.rs, `Client::election` in election.rs).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use sync_protocol::{
    DEFAULT_URL, ErrorBody, Grant, LockList, LockState, Renewal, TOKEN_FILE_ENV, URL_ENV, codes,
    lease_event, paths,
};

use crate::error::{Error, Result};

/// A handle on the elector. Cheap to clone; clones share one connection pool.
///
/// The address comes from [`ClientBuilder::url`], else `SYNC_ELECTOR_URL`, else
/// `http://127.0.0.1:13131`.
///
/// ```no_run
/// # async fn run() -> sync_client::Result<()> {
/// let client = sync_client::Client::new();
/// let guard = client.lock("test").on_lost(|| eprintln!("lost")).acquire().await?;
/// println!("token {}", guard.fencing_token());
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Why this client cannot work, when [`Client::new`] could not build it properly.
    broken: Option<Error>,
    base: String,
    /// `base`, parsed once. Parsing each request's whole URL again cost about 5 % of the client's
    /// instructions per acquire+release (the host goes through IDNA processing each time).
    url: reqwest::Url,
    http: reqwest::Client,
}

/// Builds a [`Client`].
#[derive(Debug, Default, Clone)]
#[must_use]
pub struct ClientBuilder {
    url: Option<String>,
    token: Option<String>,
}

impl ClientBuilder {
    /// The elector's base URL, such as `http://127.0.0.1:13131`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The bearer token of an elector started with `--token-file`. Without this, the token is
    /// read from the file named by `SYNC_ELECTOR_TOKEN_FILE`, if that is set.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Checks the address (and the token, if any) and builds the client.
    pub fn build(self) -> Result<Client> {
        let url = self
            .url
            .or_else(|| std::env::var(URL_ENV).ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let mut parsed = reqwest::Url::parse(&url).map_err(|e| Error::InvalidUrl {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        if parsed.scheme() != "http" {
            return Err(Error::InvalidUrl {
                url,
                reason: "the elector speaks plain http on loopback; use http://".into(),
            });
        }
        // HTTP/2 without TLS: every request and every held lock's event stream share one
        // connection, instead of a connection (and its buffers in the elector) per held lock.
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some((token, from)) = token(self.token)? {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::Token {
                    from,
                    reason: "it holds characters a header cannot carry".into(),
                })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .no_proxy()
            .tcp_nodelay(true)
            .http2_prior_knowledge()
            .build()
            .map_err(|e| Error::InvalidUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let prefix = parsed.path().trim_end_matches('/').to_owned();
        parsed.set_path(&prefix);
        Ok(Client {
            inner: Arc::new(Inner {
                broken: None,
                base: url.trim_end_matches('/').to_owned(),
                url: parsed,
                http,
            }),
        })
    }
}

/// The token given, else the one in the file `SYNC_ELECTOR_TOKEN_FILE` names; with where it
/// came from.
fn token(given: Option<String>) -> Result<Option<(String, String)>> {
    if let Some(token) = given {
        return Ok(Some((
            token.trim().to_owned(),
            "ClientBuilder::token".into(),
        )));
    }
    let Some(path) = std::env::var_os(TOKEN_FILE_ENV).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let from = format!(
        "{} ({TOKEN_FILE_ENV})",
        std::path::Path::new(&path).display()
    );
    match sync_protocol::read_token_file(std::path::Path::new(&path)) {
        Ok(token) => Ok(Some((token, from))),
        Err(err) => Err(Error::Token {
            from,
            // The client's error carries text: the reason and what caused it.
            reason: match std::error::Error::source(&err) {
                Some(cause) => format!("{err}: {cause}"),
                None => err.to_string(),
            },
        }),
    }
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client for the elector named by `SYNC_ELECTOR_URL`, else `http://127.0.0.1:13131`.
    ///
    /// An unusable `SYNC_ELECTOR_URL` or `SYNC_ELECTOR_TOKEN_FILE` falls back to nothing: every
    /// request then fails with that error ([`Error::InvalidUrl`], [`Error::Token`]). Use
    /// [`Client::builder`] to see it at once.
    pub fn new() -> Self {
        Self::builder().build().unwrap_or_else(|err| {
            let url = match &err {
                Error::InvalidUrl { url, .. } => url.clone(),
                _ => String::new(),
            };
            Client {
                inner: Arc::new(Inner {
                    broken: Some(err),
                    base: url,
                    // Never used: every request first meets `broken`.
                    url: reqwest::Url::parse(DEFAULT_URL).expect("the default URL parses"),
                    http: reqwest::Client::new(),
                }),
            }
        })
    }

    /// A builder, to name the elector's address.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The elector's base URL.
    pub fn url(&self) -> &str {
        &self.inner.base
    }

    /// The state of lock `name`: who holds it, with what value and token.
    pub async fn lock_state(&self, name: &str) -> Result<LockState> {
        let name = sync_protocol::LockName::new(name)?;
        self.call(Method::GET, &paths::lock(name.as_str()), None::<&()>, None)
            .await
    }

    /// Every lock the elector's store knows.
    pub async fn locks(&self) -> Result<Vec<LockState>> {
        let list: LockList = self
            .call(Method::GET, paths::LOCKS, None::<&()>, None)
            .await?;
        Ok(list.locks)
    }

    fn unreachable(&self, err: &reqwest::Error) -> Error {
        if err.is_builder() {
            return Error::InvalidUrl {
                url: self.inner.base.clone(),
                reason: err.to_string(),
            };
        }
        let mut reason = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(inner) = source {
            reason = format!("{reason}: {inner}");
            source = inner.source();
        }
        Error::Unreachable {
            url: self.inner.base.clone(),
            reason,
        }
    }

    /// Sends a request and reads a JSON answer, mapping every failure to [`Error`].
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
        timeout: Option<Duration>,
    ) -> Result<T> {
        let response = self.send(method, path, body, timeout).await?;
        response
            .json()
            .await
            .map_err(|e| Error::Protocol(format!("unreadable answer to {path}: {e}")))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response> {
        self.usable()?;
        let mut request = self.inner.http.request(method, self.url_of(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(rejection(response).await)
    }

    /// The elector's URL of `path`, which may end in a query: the base URL with `path` after
    /// its own.
    fn url_of(&self, path: &str) -> reqwest::Url {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let mut url = self.inner.url.clone();
        match self.inner.url.path() {
            "" | "/" => url.set_path(path),
            prefix => url.set_path(&format!("{prefix}{path}")),
        }
        url.set_query(query);
        url
    }

    /// The error [`Client::new`] met, if it met one.
    fn usable(&self) -> Result<()> {
        match &self.inner.broken {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }

    /// One acquire request to `path` (a lock's, a semaphore's or a read-write lock's). It asks
    /// for the answer as the lease's event stream (one round trip for the grant and the stream);
    /// an elector that predates that answers with the grant as JSON, and the stream is then
    /// opened separately.
    pub(crate) async fn acquire(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<Acquired> {
        self.usable()?;
        let response = self
            .inner
            .http
            .post(self.url_of(path))
            .header(
                reqwest::header::ACCEPT,
                "text/event-stream, application/json;q=0.5",
            )
            .json(body)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if response.status() == StatusCode::CONFLICT {
            let body: ErrorBody = response
                .json()
                .await
                .map_err(|e| Error::Protocol(format!("unreadable 409: {e}")))?;
            if body.error == codes::KIND_CONFLICT {
                return Err(Error::Conflict {
                    reason: body.message,
                });
            }
            return Ok(Acquired::Busy {
                holder: body.holder,
            });
        }
        if !response.status().is_success() {
            return Err(rejection(response).await);
        }
        let streamed = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !streamed {
            let grant: Grant = response
                .json()
                .await
                .map_err(|e| Error::Protocol(format!("unreadable grant: {e}")))?;
            return Ok(Acquired::Granted(grant, None));
        }
        let mut events: Events = Box::pin(event_stream(response));
        match events.next().await {
            Some(Ok((kind, data))) if kind == lease_event::GRANTED => {
                let grant: Grant = serde_json::from_str(&data)
                    .map_err(|e| Error::Protocol(format!("unreadable grant: {e}")))?;
                Ok(Acquired::Granted(grant, Some(events)))
            }
            Some(Ok((kind, _))) => Err(Error::Protocol(format!(
                "the acquire's event stream began with {kind:?}, not {:?}",
                lease_event::GRANTED
            ))),
            Some(Err(err)) => Err(err),
            None => Err(Error::Protocol(
                "the acquire's event stream ended before the grant".into(),
            )),
        }
    }

    /// Heartbeats a lease. `timeout` bounds the request.
    pub(crate) async fn renew(&self, lease_id: &str, timeout: Duration) -> Result<Renewal> {
        self.call(
            Method::POST,
            &paths::renew(lease_id),
            None::<&()>,
            Some(timeout),
        )
        .await
    }

    pub(crate) async fn release(&self, lease_id: &str) -> Result<()> {
        self.send(Method::DELETE, &paths::lease(lease_id), None::<&()>, None)
            .await
            .map(drop)
    }

    /// A server-sent-event stream at `path`, as `(event, data)` pairs.
    pub(crate) async fn events(
        &self,
        path: &str,
    ) -> Result<impl Stream<Item = Result<(String, String)>> + Send + 'static + use<>> {
        let response = self.send(Method::GET, path, None::<&()>, None).await?;
        Ok(event_stream(response))
    }
}

/// A lease's server-sent events, as `(event, data)` pairs.
pub(crate) type Events = Pin<Box<dyn Stream<Item = Result<(String, String)>> + Send>>;

/// The `(event, data)` pairs of a server-sent-event answer.
fn event_stream(
    response: reqwest::Response,
) -> impl Stream<Item = Result<(String, String)>> + Send + 'static + use<> {
    response.bytes_stream().eventsource().map(|item| {
        item.map(|e| (e.event, e.data))
            .map_err(|e| Error::Protocol(format!("event stream broke: {e}")))
    })
}

/// What one acquire request came back with.
pub(crate) enum Acquired {
    /// The grant, and the lease's event stream when the elector answered with it.
    Granted(Grant, Option<Events>),
    Busy {
        holder: Option<String>,
    },
}

async fn rejection(response: reqwest::Response) -> Error {
    let status = response.status();
    match response.json::<ErrorBody>().await {
        Ok(body) if body.error == codes::LEASE_LOST => Error::Lost {
            name: String::new(),
            reason: body.message,
        },
        Ok(body) => Error::Rejected {
            status: status.as_u16(),
            code: body.error,
            message: body.message,
        },
        Err(_) => Error::Protocol(format!("status {status} without an error body")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the client used to request: the base URL and the path, as one string parsed again.
    fn parsed_again(base: &str, path: &str) -> reqwest::Url {
        reqwest::Url::parse(&format!("{}{path}", base.trim_end_matches('/'))).unwrap()
    }

    #[test]
    fn a_request_url_is_the_base_and_the_path_as_if_parsed_whole() {
        for base in [
            "http://127.0.0.1:13131",
            "http://127.0.0.1:13131/",
            "http://localhost:8080/elector",
            "http://localhost:8080/elector/",
        ] {
            let client = Client::builder().url(base).token("t").build().unwrap();
            for path in [
                "/v1/locks/a",
                "/v1/leases/0123/events",
                "/v1/locks/b/watch?since=3",
                "/",
            ] {
                assert_eq!(
                    client.url_of(path),
                    parsed_again(base, path),
                    "{base} + {path}"
                );
            }
        }
    }
}
