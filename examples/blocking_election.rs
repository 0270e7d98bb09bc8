//! The seed's ElectionMain with the blocking API: `new Election(...)`, then `Run()`. SIGTERM or
//! Ctrl-C resigns, so another replica takes over at once.
//!
//! Needs a running elector: `cargo run -p sync-elector` in another terminal.

use sync_client::blocking::Election;

fn main() -> anyhow::Result<()> {
    let election = Election::new(
        "test",
        || println!("I am the leader!"),
        || println!("I lost the leader!"),
    );
    println!("Waiting for election");
    election.run_until_shutdown_signal()?;
    Ok(())
}
