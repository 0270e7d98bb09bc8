//! A counting semaphore: five workers share the two permits of "nightly-jobs", so at most two
//! run at once. Each says which permit it holds and its fencing token. `SEMAPHORE_NAME` names
//! another semaphore.
//!
//! Needs a running elector: `cargo run -p sync-elector` in another terminal. Then
//! `cargo run --example semaphore`, in two terminals at once to see the permits shared across
//! processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sync_client::Client;

/// How many workers this program starts.
const WORKERS: usize = 5;
/// How many may run at once.
const PERMITS: u32 = 2;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let name = std::env::var("SEMAPHORE_NAME").unwrap_or_else(|_| "nightly-jobs".into());
    let most = run(&Client::new(), &name, Duration::from_secs(3)).await?;
    println!("At most {most} of this program's workers ran at once.");
    Ok(())
}

/// Runs every worker once, each holding a permit for `work`; returns the most that ran at once.
async fn run(client: &Client, name: &str, work: Duration) -> anyhow::Result<usize> {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        // No lost callback: as for a lock, the program exits if a permit is ever lost.
        let jobs = client.semaphore(name, PERMITS);
        let (running, most) = (running.clone(), most.clone());
        workers.push(tokio::spawn(async move {
            let permit = jobs.acquire().await?;
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            println!(
                "Worker {worker} runs on permit {} (fencing token {}).",
                permit.permit().unwrap_or_default(),
                permit.fencing_token()
            );
            tokio::time::sleep(work).await;
            // Leave the count before the release: the next worker may start the moment the
            // permit is given back.
            running.fetch_sub(1, Ordering::SeqCst);
            println!("Worker {worker} is done.");
            permit.release().await?;
            anyhow::Ok(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(most.load(Ordering::SeqCst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_workers_than_permits() {
        let config = sync_elector::Config::local("127.0.0.1:0".parse().unwrap());
        let elector = sync_elector::Server::start(config).await.unwrap();
        let client = Client::builder().url(elector.url()).build().unwrap();
        let most = run(&client, "jobs", Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(most, PERMITS as usize, "all permits in use, and no more");
        elector.shutdown().await;
    }
}
