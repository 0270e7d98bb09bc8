//! The seed's LockMain with the blocking API, line for line: `WaitOne`, hold 45 s, `Release`.
//! SIGTERM or Ctrl-C releases the lock and exits.
//!
//! Needs a running elector: `cargo run -p sync-elector` in another terminal.

use std::sync::Arc;
use std::time::Duration;

use sync_client::blocking::{Lock, on_shutdown_signal};

fn main() -> anyhow::Result<()> {
    println!("Locking");
    let lock = Arc::new(Lock::new("test"));
    let held = lock.clone();
    on_shutdown_signal(move || {
        if held.release().is_ok() {
            println!("Lock released.");
        }
        std::process::exit(0);
    });
    lock.wait_one()?;
    println!("Acquired lock, waiting for 45 seconds.");
    std::thread::sleep(Duration::from_secs(45));
    lock.release()?;
    println!("Lock released.");
    Ok(())
}
