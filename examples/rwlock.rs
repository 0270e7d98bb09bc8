//! A read-write lock: three readers share "config" while a writer waits for them, and the
//! readers that come after the writer wait behind it, so the writer is not starved.
//! `RWLOCK_NAME` names another read-write lock.
//!
//! Needs a running elector: `cargo run -p sync-elector` in another terminal. Then
//! `cargo run --example rwlock`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sync_client::{Client, Mode};
use tokio::time::sleep;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let name = std::env::var("RWLOCK_NAME").unwrap_or_else(|_| "config".into());
    let order = run(&Client::new(), &name, Duration::from_secs(2)).await?;
    println!("In the order they were granted: {}", order.join(", "));
    Ok(())
}

/// Who is inside: the number of readers, or -1 for the writer.
#[derive(Default)]
struct Inside(AtomicI64);

impl Inside {
    fn enter(&self, mode: Mode) {
        let before = match mode {
            Mode::Shared => self.0.fetch_add(1, Ordering::SeqCst),
            Mode::Exclusive => self.0.swap(-1, Ordering::SeqCst),
        };
        let alone = mode == Mode::Shared && before >= 0 || before == 0;
        assert!(alone, "a writer beside a reader ({before} inside before)");
    }

    fn leave(&self, mode: Mode) {
        match mode {
            Mode::Shared => self.0.fetch_sub(1, Ordering::SeqCst),
            Mode::Exclusive => self.0.swap(0, Ordering::SeqCst),
        };
    }
}

/// Three readers, a writer after them, two more readers after the writer; each holds for
/// `work`. Returns who was granted in what order.
async fn run(client: &Client, name: &str, work: Duration) -> anyhow::Result<Vec<String>> {
    let inside = Arc::new(Inside::default());
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let who = [
        "reader 1", "reader 2", "reader 3", "writer", "reader 4", "reader 5",
    ];
    let mut tasks = Vec::new();
    for who in who {
        let mode = if who == "writer" {
            Mode::Exclusive
        } else {
            Mode::Shared
        };
        let lock = client.rwlock(name, mode);
        let (inside, order) = (inside.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let guard = lock.acquire().await?;
            inside.enter(mode);
            order.lock().expect("order").push(who.to_owned());
            println!(
                "{who} holds {name:?} {mode:?} (fencing token {}).",
                guard.fencing_token(),
                name = guard.name()
            );
            sleep(work).await;
            inside.leave(mode);
            guard.release().await?;
            anyhow::Ok(())
        }));
        // Ask in this order.
        sleep(Duration::from_millis(100)).await;
    }
    for task in tasks {
        task.await??;
    }
    let order = order.lock().expect("order").clone();
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_goes_before_the_readers_that_came_after_it() {
        let config = sync_elector::Config::local("127.0.0.1:0".parse().unwrap());
        let elector = sync_elector::Server::start(config).await.unwrap();
        let client = Client::builder().url(elector.url()).build().unwrap();
        let order = run(&client, "config", Duration::from_millis(600))
            .await
            .unwrap();
        assert_eq!(order[3], "writer", "{order:?}");
        elector.shutdown().await;
    }
}
