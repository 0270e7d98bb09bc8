//! Distributed locks and leader election for cloud-native programs, in the manner of
//! Metaparticle/Sync: your program links this library, and the `sync-elector` sidecar in the same
//! pod does the heavy lifting against Kubernetes, etcd or its own memory.
//!
//! | item | job |
//! | --- | --- |
//! | [`Client`] | the elector's address and the HTTP connection (module `client`) |
//! | [`Lock`], [`LockGuard`] | wait for, hold and release a lock, a semaphore's permit ([`Client::semaphore`]) or a read-write lock ([`Client::rwlock`]) (module `lock`) |
//! | [`LossSignal`] | the keep-alive core shared by every guard (module `heartbeat`) |
//! | [`Election`], [`Leader`] | campaign, lead, follow the leader (module `election`) |
//! | [`Client::watch`], [`LockStream`] | follow a lock's state (module `watch`) |
//! | [`shutdown_signal`] | SIGTERM or Ctrl-C, to resign on (module `signal`) |
//! | [`blocking`] | the same, for programs without an async runtime |
//! | [`Error`] | everything that can go wrong (module `error`) |
//!
//! The safety model in one paragraph: a guard heartbeats its lease and fires "lost" when the
//! elector says so *or* when the validity the elector last confirmed runs out, so a holder learns
//! of the loss even if its elector died or hung, and before anyone else can acquire. A paused
//! process can still act after its lease ran out; the [fencing
//! token](LockGuard::fencing_token) is the defence against that: protected resources must refuse
//! a token lower than one they have seen.
//!
//! ```no_run
//! # async fn run() -> sync_client::Result<()> {
//! let client = sync_client::Client::new();
//! let guard = client.lock("test").on_lost(|| eprintln!("lost")).acquire().await?;
//! println!("holding test with token {}", guard.fencing_token());
//! guard.release().await?;
//! # Ok(()) }
//! ```

mod client;
mod election;
mod error;
mod heartbeat;
mod lock;
mod signal;
mod watch;

pub mod blocking;

pub use client::{Client, ClientBuilder};
pub use election::{Election, Leader, LeaderStream};
pub use error::{Error, InvalidName, Result};
pub use heartbeat::LossSignal;
pub use lock::{Lock, LockGuard};
pub use signal::shutdown_signal;
pub use sync_protocol::{HolderState, LockName, LockState, MAX_PERMITS, Mode, NameKind, URL_ENV};
pub use watch::LockStream;

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<super::Client>();
        assert_send_sync::<super::Lock>();
        assert_send_sync::<super::LockGuard>();
        assert_send_sync::<super::Election>();
        assert_send_sync::<super::blocking::Lock>();
        assert_send_sync::<super::blocking::Election>();
    }
}
