//! The seed's LockMain: lock "test", hold it for 45 seconds, release it; then again, so that the
//! replicas of `deploy/lock.yaml` take the lock in turn. `LOCK_NAME` names another lock.
//!
//! SIGTERM or Ctrl-C releases the lock at once and exits, so a stopped pod hands over without
//! waiting out its grace period.
//!
//! Needs a running elector: `cargo run -p sync-elector` in another terminal.

use std::time::Duration;

/// How long a replica waits after releasing before it asks again, so that a replica already
/// waiting gets its turn.
const BETWEEN_TURNS: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let name = std::env::var("LOCK_NAME").unwrap_or_else(|_| "test".into());
    // No lost callback: as the seed promises, the program exits if the lock is ever lost.
    let lock = sync_client::Lock::new(name);
    let stop = sync_client::shutdown_signal();
    tokio::pin!(stop);
    loop {
        println!("Locking");
        let guard = tokio::select! {
            guard = lock.acquire() => guard?,
            () = &mut stop => return Ok(()),
        };
        println!(
            "Acquired lock (fencing token {}), waiting for 45 seconds.",
            guard.fencing_token()
        );
        let stopped = tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(45)) => false,
            () = &mut stop => true,
        };
        // The critical section ends here, before the release: once the elector has released
        // the lock, the next holder may start before this program prints another word.
        println!("Releasing lock.");
        guard.release().await?;
        println!("Lock released.");
        if stopped {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(BETWEEN_TURNS) => {}
            () = &mut stop => return Ok(()),
        }
    }
}
