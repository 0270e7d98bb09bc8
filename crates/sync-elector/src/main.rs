//! The sync-elector binary: flags, logs, serve until SIGTERM or SIGINT, then hand every lock over.
//! SIGUSR1 logs the waiting queues and the store's state.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use sync_elector::config::LogFormat;
use sync_elector::{Config, Server};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let log = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => log.with_ansi(std::io::stderr().is_terminal()).init(),
        // Fields at the top level of each object, beside `timestamp`, `level` and `target`.
        LogFormat::Json => log.json().flatten_event(true).init(),
    }
    let server = Server::start(config).await?;
    let manager = server.manager().clone();
    sync_elector::shutdown::dump_on_sigusr1(move || {
        tracing::warn!(state = %manager.describe(), "state dump (SIGUSR1)");
    })
    .context("could not listen for SIGUSR1")?;
    let signal = sync_elector::shutdown::signalled()
        .await
        .context("could not listen for SIGTERM and SIGINT")?;
    tracing::info!(signal, "shutting down");
    server.shutdown().await;
    Ok(())
}
