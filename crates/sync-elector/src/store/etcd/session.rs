//! The etcd store's sessions: one etcd lease per ttl for every key this elector writes, as etcd's
//! own concurrency sessions do. However many claims wait or hold under it, a session costs one
//! keep-alive per `ttl / 3`:
//!
//! - its beat task sends one when the last was sent a renew interval ago, and nothing while a
//!   holder's renewal just sent one;
//! - a holder's renewal reuses a keep-alive sent within the last `ttl / 6`, and reports *when it
//!   was sent*, so the manager counts the holding's validity from there
//!   ([`crate::store::Ticket::valid_from`]), never from later;
//! - once no key uses it, the session retires: it sends nothing more and lapses in etcd by itself.
//!
//! When etcd says the lease is gone (it expired while the elector was cut off), every key under
//! it is gone too: the session is dead, its waiters hear their own key's deletion through the
//! prefix watch and queue again under a new session, and its holders' next renewal answers
//! "not holder".

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use etcd_rpc::Client;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::debug;

use super::{REQUEST_TIMEOUT, call};
use crate::store::StoreError;

/// A keep-alive sent this recently covers a renewal, as a fraction of the ttl.
const REUSE_WITHIN: u32 = 6;

/// The sessions of one store, by ttl in seconds.
#[derive(Default)]
pub(super) struct Sessions {
    by_ttl: Mutex<HashMap<u64, Arc<Session>>>,
    /// Held while a lease is granted, so that racing claims share one session.
    granting: tokio::sync::Mutex<()>,
}

/// One etcd lease, shared by every key of this elector with the same ttl.
pub(super) struct Session {
    /// The etcd lease id.
    pub lease: i64,
    /// The lease's ttl.
    pub ttl: Duration,
    state: Mutex<State>,
    /// Held while a keep-alive is in flight: a renewal and the beat falling due together (they
    /// do, as both count from the last keep-alive) send one, not two.
    sending: tokio::sync::Mutex<()>,
}

struct State {
    /// When the last keep-alive that etcd answered (or the grant) was sent.
    beat: Instant,
    /// Keys of this elector under the lease: waiting or holding.
    keys: usize,
    /// Retired (no keys) or dead (etcd lost the lease): no new key goes under it.
    ended: bool,
    /// etcd said the lease is gone.
    dead: bool,
}

/// What a session tells its store, without locks held.
pub(super) enum Event {
    /// A beat is due for this lease: give up holdings nobody renewed for a whole ttl, since the
    /// beat would keep their keys alive too.
    Due(i64),
    /// etcd said this lease is gone, with every key under it.
    Gone(i64),
}

/// The store's handler of [`Event`]s.
pub(super) type Hook = Arc<dyn Fn(Event) + Send + Sync>;

/// What a renewal learned.
pub(super) enum Beat {
    /// The lease lives; its validity counts from this instant (when the keep-alive was sent).
    Alive(Instant),
    /// etcd no longer has the lease, nor any key under it.
    Gone,
}

/// One key's use of a session; dropping it frees the key's share.
pub(super) struct Share(Arc<Session>);

impl Share {
    pub fn session(&self) -> &Arc<Session> {
        &self.0
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.keys = state.keys.saturating_sub(1);
    }
}

impl Session {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("etcd session poisoned")
    }

    /// When the last answered keep-alive (or the grant) was sent.
    pub fn beat(&self) -> Instant {
        self.state().beat
    }

    /// Whether etcd said the lease is gone.
    pub fn dead(&self) -> bool {
        self.state().dead
    }

    /// etcd refused a key under the lease because the lease is gone.
    pub fn mark_dead(&self) {
        let mut state = self.state();
        state.dead = true;
        state.ended = true;
    }

    /// A keep-alive sent within `ttl / 6`, or whether the lease is gone.
    fn recent(&self) -> Option<Beat> {
        let state = self.state();
        if state.dead {
            Some(Beat::Gone)
        } else if state.beat.elapsed() < self.ttl / REUSE_WITHIN {
            Some(Beat::Alive(state.beat))
        } else {
            None
        }
    }

    /// Renews the lease for a holder: reuses a keep-alive sent within `ttl / 6` (or in flight),
    /// else sends one.
    pub async fn renew(&self, client: &Client) -> Result<Beat, StoreError> {
        if let Some(beat) = self.recent() {
            return Ok(beat);
        }
        let _sending = self.sending.lock().await;
        if let Some(beat) = self.recent() {
            return Ok(beat);
        }
        self.keep_alive(client).await
    }

    /// Sends one keep-alive and records what etcd said.
    async fn keep_alive(&self, client: &Client) -> Result<Beat, StoreError> {
        let sent = Instant::now();
        let alive = call("renewing the lease", || {
            client.lease_keep_alive_once(self.lease)
        })
        .await?;
        let mut state = self.state();
        if alive.is_some() {
            state.beat = state.beat.max(sent);
            Ok(Beat::Alive(sent))
        } else {
            state.dead = true;
            state.ended = true;
            Ok(Beat::Gone)
        }
    }
}

impl Sessions {
    fn map(&self) -> MutexGuard<'_, HashMap<u64, Arc<Session>>> {
        self.by_ttl.lock().expect("etcd sessions poisoned")
    }

    /// A share of the live session for `ttl`, granting a new lease when there is none.
    /// `hook` hears the new session's [`Event`]s.
    pub async fn share(
        &self,
        client: &Client,
        ttl: Duration,
        hook: Hook,
    ) -> Result<Share, StoreError> {
        let secs = ttl.as_secs();
        if let Some(share) = self.live(secs) {
            return Ok(share);
        }
        let _granting = self.granting.lock().await;
        if let Some(share) = self.live(secs) {
            return Ok(share);
        }
        let sent = Instant::now();
        let seconds = i64::try_from(secs).unwrap_or(i64::MAX);
        let grant = call("granting a lease", || client.lease_grant(seconds)).await?;
        let session = Arc::new(Session {
            lease: grant.id,
            ttl,
            state: Mutex::new(State {
                beat: sent,
                keys: 1,
                ended: false,
                dead: false,
            }),
            sending: tokio::sync::Mutex::new(()),
        });
        debug!(lease = grant.id, ?ttl, "new etcd session");
        self.map().insert(secs, session.clone());
        tokio::spawn(beat(client.clone(), Arc::downgrade(&session), hook));
        Ok(Share(session))
    }

    fn live(&self, secs: u64) -> Option<Share> {
        let map = self.map();
        let session = map.get(&secs)?;
        let mut state = session.state();
        if state.ended {
            return None;
        }
        state.keys += 1;
        drop(state);
        Some(Share(session.clone()))
    }

    /// The live sessions' lease ids and key counts, for `describe`.
    pub fn describe(&self) -> Vec<(i64, u64, usize)> {
        self.map()
            .iter()
            .map(|(ttl, s)| (s.lease, *ttl, s.state().keys))
            .collect()
    }
}

/// Keeps a session's lease alive once per `ttl / 3` while keys use it; retires it when none
/// does, and reports its death.
async fn beat(client: Client, session: Weak<Session>, hook: Hook) {
    let retry = |ttl: Duration| (ttl / 15).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut next = None;
    loop {
        let Some(s) = session.upgrade() else { return };
        let interval = s.ttl / 3;
        let due = next.unwrap_or_else(|| s.beat() + interval);
        drop(s);
        sleep_until(due).await;
        let Some(s) = session.upgrade() else { return };
        hook(Event::Due(s.lease));
        {
            let mut state = s.state();
            if state.ended {
                return;
            }
            if state.keys == 0 {
                // Nobody uses it: let it lapse in etcd rather than spend a request revoking it.
                state.ended = true;
                return;
            }
            if state.beat.elapsed() < interval {
                // A holder's renewal sent one meanwhile.
                next = None;
                continue;
            }
        }
        let sending = s.sending.lock().await;
        if s.beat().elapsed() < interval {
            // A holder's renewal sent one while we waited for it.
            next = None;
            continue;
        }
        let sent = timeout(REQUEST_TIMEOUT, s.keep_alive(&client)).await;
        drop(sending);
        match sent {
            Ok(Ok(Beat::Alive(_))) => next = None,
            Ok(Ok(Beat::Gone)) => {
                debug!(lease = s.lease, "the etcd session's lease is gone");
                hook(Event::Gone(s.lease));
                return;
            }
            Ok(Err(_)) | Err(_) => {
                next = Some(Instant::now() + retry(s.ttl));
            }
        }
    }
}
