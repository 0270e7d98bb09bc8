//! The seed's ElectionMain with the blocking API: `new Election(...)`, then `Run()`.
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
    election.run()?;
    Ok(())
}
