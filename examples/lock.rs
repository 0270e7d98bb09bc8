//! The seed's LockMain: lock "test", hold it for 45 seconds, release it.
//!
//! Needs a running elector: `cargo run -p sync-elector` in another terminal.

use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("Locking");
    // No lost callback: as the seed promises, the program exits if the lock is ever lost.
    let guard = sync_client::Lock::new("test").acquire().await?;
    println!(
        "Acquired lock (fencing token {}), waiting for 45 seconds.",
        guard.fencing_token()
    );
    tokio::time::sleep(Duration::from_secs(45)).await;
    guard.release().await?;
    println!("Lock released.");
    Ok(())
}
