//! `syncctl run LOCK -- CMD`: wait for the lock, run the command while holding it, release the
//! lock the moment the command exits, and stop the command the moment the lock is lost.

use std::ffi::OsString;
use std::time::Duration;

use nix::sys::signal::Signal;
use sync_client::{Client, LockGuard};
use tokio::signal::unix::{SignalKind, signal};

use crate::child::{Running, status_code};
use crate::exit::{self, Exit};

/// What `run` was asked to do.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The lock's name: up to 253 lower-case letters, digits, '-' and '.'.
    #[arg(value_parser = crate::lock_name)]
    pub lock: String,
    /// Give up after waiting this long (30s, 5m); without it, wait as long as it takes.
    #[arg(long, value_parser = crate::duration::parse, value_name = "DURATION")]
    pub wait: Option<Duration>,
    /// The lock's ttl: how long it outlives this process if it dies (default: the elector's).
    #[arg(long, value_parser = crate::duration::parse, value_name = "DURATION")]
    pub ttl: Option<Duration>,
    /// When the lock is lost, how long the command has between SIGTERM and SIGKILL.
    #[arg(long, value_parser = crate::duration::parse, value_name = "DURATION", default_value = "10s")]
    pub grace: Duration,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Runs `args.command` under the lock; returns how syncctl exits.
pub async fn run(client: &Client, args: RunArgs) -> Exit {
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        _ => return Exit::fail(exit::FAILURE, "could not listen for SIGINT and SIGTERM"),
    };
    let mut lock = client.lock(args.lock.as_str()).on_lost(|| {});
    if let Some(ttl) = args.ttl {
        lock = lock.ttl(ttl);
    }
    // Waiting: a signal ends the wait, and syncctl exits as the signal would have ended it.
    let acquired = tokio::select! {
        acquired = async {
            match args.wait {
                Some(wait) => lock.acquire_timeout(wait).await,
                None => lock.acquire().await,
            }
        } => acquired,
        _ = interrupt.recv() => return Exit::quiet(exit::signalled(Signal::SIGINT as i32)),
        _ = terminate.recv() => return Exit::quiet(exit::signalled(Signal::SIGTERM as i32)),
    };
    let guard = match acquired {
        Ok(guard) => guard,
        Err(err) => return crate::client_error(err),
    };
    let env = [
        ("SYNC_LOCK", args.lock.clone()),
        ("SYNC_FENCING_TOKEN", guard.fencing_token().to_string()),
        ("SYNC_HOLDER", guard.holder().to_owned()),
    ];
    let mut child = match Running::start(&args.command, &env) {
        Ok(child) => child,
        Err(exit) => {
            let _ = guard.release().await;
            return exit;
        }
    };
    loop {
        tokio::select! {
            status = child.wait() => return finished(status, guard).await,
            () = guard.lost() => return lost(&mut child, &args, &guard).await,
            _ = interrupt.recv() => child.signal(Signal::SIGINT),
            _ = terminate.recv() => child.signal(Signal::SIGTERM),
        }
    }
}

/// The command exited: release the lock at once and exit with the command's status.
async fn finished(status: std::io::Result<std::process::ExitStatus>, guard: LockGuard) -> Exit {
    let released = guard.release().await;
    let code = match status {
        Ok(status) => status_code(status),
        Err(err) => return Exit::fail(exit::FAILURE, format!("waiting for the command: {err}")),
    };
    match released {
        Ok(()) => Exit::quiet(code),
        // The command finished; the lock went at the same moment. Its status still stands.
        Err(err) => Exit {
            code,
            message: Some(format!(
                "releasing the lock after the command exited: {err}"
            )),
        },
    }
}

/// The lock was lost: stop the command's process group and exit with [`exit::LOST`].
async fn lost(child: &mut Running, args: &RunArgs, guard: &LockGuard) -> Exit {
    let reason = guard
        .loss_signal()
        .reason()
        .unwrap_or_else(|| "no reason given".into());
    crate::say(&format!(
        "syncctl: lock {} was lost ({reason}); stopping the command (process group {}): SIGTERM, \
         then SIGKILL after {}",
        args.lock,
        child.pid(),
        humantime::format_duration(args.grace)
    ));
    match child.stop(args.grace).await {
        Ok(status) => Exit::fail(
            exit::LOST,
            format!(
                "the command was stopped because lock {} was lost (its own status: {})",
                args.lock,
                status_code(status)
            ),
        ),
        Err(err) => Exit::fail(exit::LOST, format!("stopping the command: {err}")),
    }
}
