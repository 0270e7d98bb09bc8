//! `syncctl`: make any program a singleton without changing its code, through the sync-elector.
//!
//! ```text
//! syncctl run nightly-report -- ./report.sh --full
//! ```
//!
//! It talks to the elector only through `sync-client`. The modules: [`run`] (the `run`
//! subcommand and the holding it shares with [`elect`]), [`child`] (the command's process group
//! and signals), [`show`] (`locks`, `get`, `watch`), [`exit`] (every exit status), [`duration`] (durations on the command line). The
//! reference is docs/syncctl.md.

mod child;
mod duration;
mod elect;
mod exit;
mod run;
mod show;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sync_client::Client;

use crate::exit::Exit;

/// Make any program a singleton without changing its code: `syncctl run LOCK -- CMD` runs CMD
/// only while holding LOCK, through the sync-elector.
#[derive(Debug, Parser)]
#[command(name = "syncctl", version, propagate_version = true)]
struct Cli {
    /// The sync-elector's address [default: http://127.0.0.1:13131].
    #[arg(long, global = true, env = sync_client::URL_ENV, value_name = "URL")]
    elector: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Wait for LOCK, run CMD while holding it, and release LOCK the moment CMD exits.
    ///
    /// With --permits N, LOCK is a semaphore and CMD holds one of its N permits; with --shared
    /// or --exclusive, LOCK is a read-write lock.
    ///
    /// CMD gets SYNC_LOCK, SYNC_FENCING_TOKEN and SYNC_HOLDER in its environment (and
    /// SYNC_PERMIT or SYNC_MODE). SIGINT and
    /// SIGTERM are passed on to it. If the lock is lost, CMD's process group gets SIGTERM at
    /// once and SIGKILL after --grace. Exits with CMD's status; 75 when --wait ran out, 76 when
    /// the lock was lost, 69 when the elector is unreachable (docs/syncctl.md).
    Run(run::RunArgs),
    /// Campaign for NAME, run CMD while leader, stop it when leadership is lost, campaign again.
    ///
    /// CMD gets the same environment as with `run`. When CMD exits, leadership is handed over at
    /// once and syncctl campaigns again; with --once it exits with CMD's status instead (76 if
    /// leadership was lost). SIGINT and SIGTERM are passed on to CMD, and syncctl exits when it does.
    Elect(elect::ElectArgs),
    /// Every lock the elector's store knows: name, holder, token, time left, value.
    Locks {
        /// How to print.
        #[arg(short, long, value_enum, default_value_t)]
        output: show::Output,
    },
    /// One lock (a lock never held shows as free, token 0).
    Get {
        /// The lock's name.
        #[arg(value_parser = lock_name)]
        name: String,
        /// How to print.
        #[arg(short, long, value_enum, default_value_t)]
        output: show::Output,
    },
    /// Prints a completion script for SHELL: `syncctl completions bash > /etc/bash_completion.d/syncctl`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// One line per change of the lock's holder, value or token, until Ctrl-C.
    Watch {
        /// The lock's name.
        #[arg(value_parser = lock_name)]
        name: String,
        /// How to print.
        #[arg(short, long, value_enum, default_value_t)]
        output: show::Output,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let exit = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(dispatch(cli)),
        Err(err) => Exit::fail(exit::FAILURE, format!("starting the runtime: {err}")),
    };
    if let Some(message) = &exit.message {
        say(&format!("syncctl: {message}"));
    }
    ExitCode::from(exit.code)
}

async fn dispatch(cli: Cli) -> Exit {
    let command = match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "syncctl", &mut script);
            emit(&String::from_utf8_lossy(&script));
            return Exit::quiet(0);
        }
        command => command,
    };
    let mut builder = Client::builder();
    if let Some(url) = &cli.elector {
        builder = builder.url(url);
    }
    let client = match builder.build() {
        Ok(client) => client,
        Err(err) => return Exit::from(err),
    };
    match command {
        Command::Run(args) => run::run(&client, args).await,
        Command::Elect(args) => elect::elect(&client, args).await,
        Command::Locks { output } => show::locks(&client, output).await,
        Command::Get { name, output } => show::get(&client, &name, output).await,
        Command::Watch { name, output } => show::watch(&client, &name, output).await,
        Command::Completions { .. } => Exit::quiet(0),
    }
}

/// Writes `text` to standard output. When the reader has gone (`syncctl locks | head -1`), exits
/// at once with the status a shell gives a process killed by SIGPIPE, without a message.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(i32::from(exit::signalled(13)));
    }
}

/// Writes a line to standard error; a closed standard error is ignored (eprintln! would panic).
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Checks a lock name on the command line, quoting the rule when it is broken.
fn lock_name(name: &str) -> Result<String, String> {
    sync_client::LockName::new(name)
        .map(|n| n.as_str().to_owned())
        .map_err(|err| err.to_string())
}

/// An error from the client library as syncctl reports it: an unreachable elector also says how
/// to name another.
fn client_error(err: sync_client::Error) -> Exit {
    match err {
        sync_client::Error::Unreachable { url, reason } => Exit::fail(
            exit::UNREACHABLE,
            format!(
                "could not reach the sync-elector at {url} ({reason}); start it (in a pod: the \
                 elector sidecar; on one machine: sync-elector), or give its address with \
                 --elector URL or the {} environment variable",
                sync_client::URL_ENV,
            ),
        ),
        other => Exit::from(other),
    }
}
