//! The one-command local demo: `cargo run --release --example demo`.
//!
//! Starts an elector on the embedded memory store and three election replicas as separate
//! processes, stops the leader's process after a few seconds, shows another replica elected, and
//! exits 0. Each replica's lines are prefixed with its name.
//!
//! The replicas are this same program started again with `DEMO_REPLICA` set.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use sync_client::Election;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

const ELECTION: &str = "demo";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::var("DEMO_REPLICA") {
        Ok(name) => replica(name).await,
        Err(_) => orchestrate().await,
    }
}

/// One replica: campaign for leader of "demo" until killed.
async fn replica(name: String) -> anyhow::Result<()> {
    let election = Election::new(
        ELECTION,
        || println!("I am the leader!"),
        || println!("I lost the leader!"),
    )
    .ttl(Duration::from_secs(5))
    .value(name);
    println!("Waiting for election");
    election.run().await?;
    Ok(())
}

async fn orchestrate() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("sync_elector=error")
        .with_writer(std::io::stderr)
        .init();
    let mut config = sync_elector::Config::local("127.0.0.1:0".parse()?);
    config.identity = Some("demo-elector".into());
    let elector = sync_elector::Server::start(config).await?;
    say(&format!(
        "elector on {} (memory store); starting 3 replicas",
        elector.url()
    ));

    let (lines, mut heard) = mpsc::unbounded_channel();
    let mut replicas = Vec::new();
    for i in 1..=3 {
        replicas.push(spawn_replica(
            &format!("replica-{i}"),
            &elector.url(),
            lines.clone(),
        )?);
    }

    let first = timeout(Duration::from_secs(20), leader(&mut heard, None))
        .await
        .context("no replica was elected within 20 s")??;
    say(&format!("{first} leads; stopping its process in 3 seconds"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some((who, line))) =
        timeout(deadline - tokio::time::Instant::now(), heard.recv()).await
    {
        print_line(&who, &line);
    }
    let index = replicas
        .iter()
        .position(|(name, _)| *name == first)
        .expect("the leader is one of ours");
    let (_, mut stopped) = replicas.swap_remove(index);
    // The clock starts at the kill: the new leader's line may already be waiting by the time
    // the killed process is reaped.
    let killed = tokio::time::Instant::now();
    stopped.start_kill()?;
    stopped.wait().await?;
    say(&format!(
        "stopped {first} (SIGKILL); waiting for a new leader"
    ));
    let second = timeout(Duration::from_secs(20), leader(&mut heard, Some(&first)))
        .await
        .context("no new leader within 20 s")??;
    say(&format!(
        "{second} took over {:.1?} after {first} was killed",
        killed.elapsed()
    ));

    sleep(Duration::from_millis(300)).await;
    for (_, mut child) in replicas {
        child.start_kill()?;
        child.wait().await?;
    }
    elector.shutdown().await;
    say("done");
    Ok(())
}

/// Prints replica lines until one other than `not` says it leads; returns its name.
async fn leader(
    heard: &mut mpsc::UnboundedReceiver<(String, String)>,
    not: Option<&str>,
) -> anyhow::Result<String> {
    while let Some((who, line)) = heard.recv().await {
        print_line(&who, &line);
        if line.contains("I am the leader!") && Some(who.as_str()) != not {
            return Ok(who);
        }
    }
    bail!("every replica exited")
}

fn spawn_replica(
    name: &str,
    url: &str,
    lines: mpsc::UnboundedSender<(String, String)>,
) -> anyhow::Result<(String, Child)> {
    let mut child = Command::new(std::env::current_exe()?)
        .env("DEMO_REPLICA", name)
        .env("SYNC_ELECTOR_URL", url)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("could not start {name}"))?;
    let stdout = child.stdout.take().expect("piped");
    let who = name.to_owned();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if lines.send((who.clone(), line)).is_err() {
                break;
            }
        }
    });
    Ok((name.to_owned(), child))
}

fn print_line(who: &str, line: &str) {
    println!("[{who}] {line}");
}

fn say(line: &str) {
    println!("[demo] {line}");
}
