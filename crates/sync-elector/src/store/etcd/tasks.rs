//! The etcd store's background tasks: the prefix watch that wakes waiters and followers and
//! tells holders their key is gone, and the sweep that catches what the watch missed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_rpc::{Client, EventType, RangeRequest, WatchCreateRequest};
use tokio::time::{sleep, timeout};
use tracing::warn;

use super::line::Line;
use super::{REQUEST_TIMEOUT, key_str, revision_of};

/// How often an idle sweep looks whether anyone waits (a local check, no request).
const IDLE_LOOK: Duration = Duration::from_secs(1);

pub(super) fn lock(line: &Mutex<Line>) -> MutexGuard<'_, Line> {
    line.lock().expect("etcd store state poisoned")
}

/// One watch over the whole prefix: followers hear every change of their lock; a waiter hears
/// the deletion of its predecessor ([`Line::deleted`]). Re-established after errors, from the
/// last revision seen.
pub(super) async fn watch_prefix(
    client: Client,
    prefix: String,
    line: Arc<Mutex<Line>>,
    cover: tokio::sync::watch::Sender<bool>,
) {
    // The first revision the watch must deliver; 0 until the current revision is known.
    let mut from = 0i64;
    loop {
        if from == 0 {
            // Watching "from now" would leave a gap between a read and the watch's start: learn
            // the current revision and watch from the one after it.
            let request = RangeRequest {
                keys_only: true,
                limit: 1,
                ..RangeRequest::prefix(prefix.as_str())
            };
            match timeout(REQUEST_TIMEOUT, client.range(request)).await {
                Ok(Ok(response)) => from = revision_of(response.header.as_ref()) + 1,
                failed => {
                    let error = match failed {
                        Ok(Err(err)) => err.to_string(),
                        _ => format!("no answer within {REQUEST_TIMEOUT:?}"),
                    };
                    warn!(%error, "could not read etcd's revision; retrying");
                    sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let request = WatchCreateRequest {
            start_revision: from,
            ..WatchCreateRequest::prefix(prefix.as_str())
        };
        let mut stream = match client.watch(request).await {
            Ok(stream) => stream,
            Err(err) => {
                lock(&line).watching = false;
                warn!(error = %err, "could not watch etcd; retrying");
                sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        lock(&line).watching = true;
        cover.send_replace(true);
        loop {
            let message = match stream.message().await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(err) => {
                    warn!(error = %err, "the etcd watch broke; re-establishing it");
                    break;
                }
            };
            if message.compact_revision > 0 {
                // The history we asked for is gone: start again from the current revision, and
                // wake every waiter once so each reads the line again.
                from = 0;
                let mut l = lock(&line);
                let names: HashSet<String> = l.contenders.keys().map(|(n, _)| n.clone()).collect();
                for name in names {
                    l.wake(&name);
                }
                // A held key's deletion may be in the lost history: read each before trusting
                // it again.
                for held in l.held.values_mut() {
                    held.verified = false;
                }
                break;
            }
            if message.canceled {
                warn!(reason = %message.cancel_reason, "etcd cancelled the watch; re-establishing it");
                break;
            }
            let mut l = lock(&line);
            for event in &message.events {
                let Some(kv) = &event.kv else { continue };
                from = from.max(kv.mod_revision + 1);
                let Some(key) = key_str(kv) else {
                    continue;
                };
                let Some((name, _)) = key
                    .strip_prefix(prefix.as_str())
                    .and_then(|k| k.rsplit_once('/'))
                else {
                    continue;
                };
                l.observers.notify(name);
                if event.r#type() == EventType::Delete {
                    l.deleted(name, key);
                }
            }
            l.watched = from - 1;
        }
        lock(&line).watching = false;
        sleep(Duration::from_millis(200)).await;
    }
}

/// The backstop for a deletion the watch never reported: while claimants of this elector wait,
/// one read of every key under the prefix per period (the shortest waiting ttl), and
/// [`Line::sweep`] wakes whoever waits behind a key that is gone. Nothing is read while nobody
/// waits.
pub(super) async fn sweep(client: Client, prefix: String, line: Arc<Mutex<Line>>) {
    loop {
        let Some(period) = lock(&line).sweep_period() else {
            sleep(IDLE_LOOK).await;
            continue;
        };
        sleep(period).await;
        if lock(&line).sweep_period().is_none() {
            continue;
        }
        let request = RangeRequest {
            keys_only: true,
            ..RangeRequest::prefix(prefix.as_str())
        };
        let read = match timeout(REQUEST_TIMEOUT, client.range(request)).await {
            Ok(Ok(read)) => read,
            Ok(Err(err)) => {
                warn!(error = %err, "the sweep could not read the locks; trying again next period");
                continue;
            }
            Err(_) => {
                warn!("the sweep's read got no answer; trying again next period");
                continue;
            }
        };
        let present: HashSet<&str> = read.kvs.iter().filter_map(key_str).collect();
        let missed = lock(&line).sweep(&present, revision_of(read.header.as_ref()));
        if missed > 0 {
            warn!(
                waiters = missed,
                "the sweep woke waiters whose predecessor's deletion the watch never reported"
            );
        }
    }
}
