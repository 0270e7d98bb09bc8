//! Fault injection and request counting, per client. A client is named by its bearer token (each
//! test kubeconfig carries its own), else by its User-Agent.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Requests one client sent, by verb.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// GET of one object.
    pub get: u64,
    /// GET of a collection.
    pub list: u64,
    /// GET of a collection with `watch=true`.
    pub watch: u64,
    /// POST.
    pub create: u64,
    /// PUT.
    pub update: u64,
    /// PATCH.
    pub patch: u64,
    /// DELETE.
    pub delete: u64,
}

impl Counts {
    /// Every request but watches.
    pub fn requests(&self) -> u64 {
        self.get + self.list + self.create + self.update + self.patch + self.delete
    }

    /// Writes: create, update, patch, delete.
    pub fn writes(&self) -> u64 {
        self.create + self.update + self.patch + self.delete
    }
}

#[derive(Default)]
struct State {
    latency: Duration,
    /// Every request answers this status until cleared (an outage).
    failing: Option<u16>,
    partitioned: HashSet<String>,
    forbidden: HashSet<String>,
    counts: BTreeMap<String, Counts>,
}

/// The faults in force and the requests seen.
pub struct Faults {
    state: Mutex<State>,
    /// Bumped whenever a partition heals, to wake stalled requests.
    healed: watch::Sender<u64>,
    /// Cancelled to drop every open watch; replaced afterwards.
    watches: Mutex<CancellationToken>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            healed: watch::channel(0).0,
            watches: Mutex::new(CancellationToken::new()),
        }
    }
}

/// What the fault layer decided for one request.
pub enum Verdict {
    /// Serve it.
    Serve,
    /// Answer with this status and a `Status` body.
    Fail(u16),
    /// Refuse it: the client has no permission.
    Forbidden,
}

impl Faults {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("faults poisoned")
    }

    /// Counts a request of `client`, waits out partitions and latency, and says how to answer.
    pub async fn admit(&self, client: &str, verb: &str) -> Verdict {
        {
            let mut state = self.state();
            let counts = state.counts.entry(client.to_owned()).or_default();
            match verb {
                "get" => counts.get += 1,
                "list" => counts.list += 1,
                "watch" => counts.watch += 1,
                "create" => counts.create += 1,
                "update" => counts.update += 1,
                "patch" => counts.patch += 1,
                _ => counts.delete += 1,
            }
        }
        self.reachable(client).await;
        let latency = self.state().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let state = self.state();
        if state.forbidden.contains(client) {
            Verdict::Forbidden
        } else if let Some(code) = state.failing {
            Verdict::Fail(code)
        } else {
            Verdict::Serve
        }
    }

    /// Returns once `client` is not partitioned: a partitioned client's requests and watch
    /// events stall, as packets to a cut-off node do, and flow again when the partition heals.
    pub async fn reachable(&self, client: &str) {
        let mut healed = self.healed.subscribe();
        while self.state().partitioned.contains(client) {
            if healed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Adds latency to every request.
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// Every request answers `code` (such as 503) until `None`.
    pub fn set_failing(&self, code: Option<u16>) {
        self.state().failing = code;
    }

    /// Cuts `client` off, or reconnects it.
    pub fn set_partitioned(&self, client: &str, partitioned: bool) {
        if partitioned {
            self.state().partitioned.insert(client.to_owned());
        } else {
            self.state().partitioned.remove(client);
            self.healed.send_modify(|n| *n += 1);
        }
    }

    /// Refuses `client` with 403 Forbidden, as a missing RBAC Role does.
    pub fn set_forbidden(&self, client: &str, forbidden: bool) {
        if forbidden {
            self.state().forbidden.insert(client.to_owned());
        } else {
            self.state().forbidden.remove(client);
        }
    }

    /// Ends every open watch stream now.
    pub fn drop_watches(&self) {
        let mut token = self.watches.lock().expect("watches poisoned");
        token.cancel();
        *token = CancellationToken::new();
    }

    /// A token cancelled by the next [`drop_watches`](Self::drop_watches).
    pub fn watch_token(&self) -> CancellationToken {
        self.watches.lock().expect("watches poisoned").clone()
    }

    /// The requests `client` has sent.
    pub fn counts(&self, client: &str) -> Counts {
        self.state().counts.get(client).copied().unwrap_or_default()
    }
}
