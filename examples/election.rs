//! The seed's ElectionMain: run for leader of "test", saying so when elected and when not.
//! Ctrl-C resigns, so another replica takes over at once.
//!
//! With `SERVE=ADDRESS` (deploy/election.yaml sets `0.0.0.0:8080`) it also answers every HTTP
//! request with its name and whether it leads, so the leader-only Service
//! (deploy/leader-service.yaml) shows which replica it reaches.
//!
//! Needs a running elector: `cargo run -p sync-elector` in another terminal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sync_client::Election;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let leading = Arc::new(AtomicBool::new(false));
    let (won, lost) = (leading.clone(), leading.clone());
    let election = Arc::new(Election::new(
        "test",
        move || {
            won.store(true, Ordering::SeqCst);
            println!("I am the leader!");
        },
        move || {
            lost.store(false, Ordering::SeqCst);
            println!("I lost the leader!");
        },
    ));
    if let Ok(address) = std::env::var("SERVE") {
        let listener = tokio::net::TcpListener::bind(&address).await?;
        println!("Answering HTTP on {address}");
        tokio::spawn(answer(listener, leading));
    }
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

/// Answers each connection with one plain-text line: this replica's name and whether it leads.
async fn answer(listener: tokio::net::TcpListener, leading: Arc<AtomicBool>) {
    let name = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "this replica".into());
    while let Ok((mut connection, _)) = listener.accept().await {
        let body = if leading.load(Ordering::SeqCst) {
            format!("{name} leads\n")
        } else {
            format!("{name} does not lead\n")
        };
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = connection.read(&mut request).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = connection.write_all(response.as_bytes()).await;
        });
    }
}
