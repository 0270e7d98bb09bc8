//! The seed's ElectionMain: run for leader of "test", saying so when elected and when not.
//! Ctrl-C resigns, so another replica takes over at once.
//!
//! Needs a running elector: `cargo run -p sync-elector` in another terminal.

use std::sync::Arc;

use sync_client::Election;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let election = Arc::new(Election::new(
        "test",
        || println!("I am the leader!"),
        || println!("I lost the leader!"),
    ));
    let resign = election.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            resign.shutdown();
        }
    });
    println!("Waiting for election");
    election.run().await?;
    Ok(())
}
