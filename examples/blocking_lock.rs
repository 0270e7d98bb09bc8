//! The seed's LockMain with the blocking API, line for line: `WaitOne`, hold 45 s, `Release`.
//!
//! Needs a running elector: `cargo run -p sync-elector` in another terminal.

use std::time::Duration;

use sync_client::blocking::Lock;

fn main() -> anyhow::Result<()> {
    println!("Locking");
    let lock = Lock::new("test");
    lock.wait_one()?;
    println!("Acquired lock, waiting for 45 seconds.");
    std::thread::sleep(Duration::from_secs(45));
    lock.release()?;
    println!("Lock released.");
    Ok(())
}
