//! The seed's ElectionMain: run for leader of "test" (or of `LOCK_NAME`), saying so when elected
//! and when not. SIGTERM or Ctrl-C resigns, so another replica takes over at once, also when a
//! pod is stopped.
//!
//! With `SERVE=ADDRESS[,ADDRESS...]` (deploy/election.yaml sets `0.0.0.0:8080`) it also answers
//! every HTTP request with its name and whether it leads, so the leader-only Service
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
    let name = std::env::var("LOCK_NAME").unwrap_or_else(|_| "test".into());
    let election = Election::new(
        name,
        move || {
            won.store(true, Ordering::SeqCst);
            println!("I am the leader!");
        },
        move || {
            lost.store(false, Ordering::SeqCst);
            println!("I lost the leader!");
        },
    );
    if let Ok(addresses) = std::env::var("SERVE") {
        for address in addresses.split(',').map(str::trim) {
            let listener = tokio::net::TcpListener::bind(address).await?;
            println!("Answering HTTP on {address}");
            tokio::spawn(answer(listener, leading.clone()));
        }
    }
    println!("Waiting for election");
    election.run_until(sync_client::shutdown_signal()).await?;
    Ok(())
}

/// Answers each connection with one plain-text line: this replica's name, whether it leads, and
/// the port asked, such as `election-example-7d9c-xk2p leads on 8080`.
async fn answer(listener: tokio::net::TcpListener, leading: Arc<AtomicBool>) {
    let name = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "this replica".into());
    let port = listener.local_addr().map_or(0, |a| a.port());
    while let Ok((mut connection, _)) = listener.accept().await {
        let body = if leading.load(Ordering::SeqCst) {
            format!("{name} leads on {port}\n")
        } else {
            format!("{name} does not lead on {port}\n")
        };
        tokio::spawn(async move {
            // The request's head, up to its blank line (closing with part of it unread would
            // reset the connection): then one answer, and close.
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") && request.len() < 16 * 1024 {
                match connection.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = connection.write_all(response.as_bytes()).await;
        });
    }
}
