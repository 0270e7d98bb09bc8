//! `syncctl run LOCK -- CMD`: wait for the lock (or a semaphore's permit, or a read-write lock),
//! run the command while holding it, release it the moment the command exits, and stop the
//! command the moment it is lost. The holding itself ([`hold`]) is shared with `syncctl elect`.

use std::ffi::OsString;
use std::time::Duration;

use nix::sys::signal::Signal;
use sync_client::{Client, Lock, LockGuard, MAX_PERMITS, Mode};
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
    /// Take one of N permits of the semaphore LOCK: at most N commands run at once (1 to 128).
    /// CMD gets SYNC_PERMIT, 0 to N-1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PERMITS)))]
    pub permits: Option<u32>,
    /// Hold the read-write lock LOCK shared: with other --shared runs, never with an
    /// --exclusive one.
    #[arg(long, conflicts_with_all = ["permits", "exclusive"])]
    pub shared: bool,
    /// Hold the read-write lock LOCK exclusively: alone, and ahead of --shared runs that come
    /// after it.
    #[arg(long, conflicts_with = "permits")]
    pub exclusive: bool,
    /// The ttl, the grace and the command: the same for `run` and `elect`.
    #[command(flatten)]
    pub hold: HoldArgs,
}

impl RunArgs {
    /// What to hold: the lock, a permit, or the read-write lock in a mode.
    fn handle(&self, client: &Client) -> Lock {
        let name = self.lock.as_str();
        let lock = match (self.permits, self.shared, self.exclusive) {
            (Some(permits), ..) => client.semaphore(name, permits),
            (None, true, _) => client.rwlock(name, Mode::Shared),
            (None, false, true) => client.rwlock(name, Mode::Exclusive),
            (None, false, false) => client.lock(name),
        };
        self.hold.configure(lock)
    }
}

/// What a holding needs, for `run` and `elect` alike.
#[derive(Debug, clap::Args)]
pub struct HoldArgs {
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

impl HoldArgs {
    /// `lock` with this ttl, whose loss [`hold`] handles (no callback).
    pub fn configure(&self, lock: Lock) -> Lock {
        let lock = lock.on_lost(|| {});
        match self.ttl {
            Some(ttl) => lock.ttl(ttl),
            None => lock,
        }
    }
}

/// SIGINT and SIGTERM, received by syncctl.
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening.
    pub fn listen() -> Result<Self, Exit> {
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(interrupt), Ok(terminate)) => Ok(Self {
                interrupt,
                terminate,
            }),
            _ => Err(Exit::fail(
                exit::FAILURE,
                "could not listen for SIGINT and SIGTERM",
            )),
        }
    }

    /// The next one.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::SIGINT,
            _ = self.terminate.recv() => Signal::SIGTERM,
        }
    }
}

/// Waits for `lock` (at most `wait`); a signal ends the wait, and syncctl exits as that signal
/// would have ended it.
pub async fn acquire(
    lock: &Lock,
    wait: Option<Duration>,
    signals: &mut Signals,
) -> Result<LockGuard, Exit> {
    let acquired = tokio::select! {
        acquired = async {
            match wait {
                Some(wait) => lock.acquire_timeout(wait).await,
                None => lock.acquire().await,
            }
        } => acquired,
        signal = signals.recv() => return Err(Exit::quiet(exit::signalled(signal as i32))),
    };
    acquired.map_err(crate::client_error)
}

/// How a holding ended.
pub enum Ended {
    /// The command exited with this status; the lock is released. `signalled`: syncctl had
    /// passed a SIGINT or SIGTERM on to it.
    Exited {
        /// The command's status, as a shell reports it.
        code: u8,
        /// Whether syncctl was asked to stop.
        signalled: bool,
    },
    /// The lock was lost and the command stopped: how syncctl exits if it stops now.
    Lost(Exit),
    /// The command could not be started (the lock is released).
    NotStarted(Exit),
}

/// Runs the command while `guard` holds `name`: passes signals on, releases the lock when the
/// command exits, stops the command (within `args.grace`) when the lock is lost.
pub async fn hold(guard: LockGuard, name: &str, args: &HoldArgs, signals: &mut Signals) -> Ended {
    let grace = args.grace;
    let mut env = vec![
        ("SYNC_LOCK", name.to_owned()),
        ("SYNC_FENCING_TOKEN", guard.fencing_token().to_string()),
        ("SYNC_HOLDER", guard.holder().to_owned()),
    ];
    if let Some(permit) = guard.permit() {
        env.push(("SYNC_PERMIT", permit.to_string()));
    }
    if let Some(mode) = guard.mode() {
        let mode = match mode {
            Mode::Shared => "shared",
            Mode::Exclusive => "exclusive",
        };
        env.push(("SYNC_MODE", mode.to_owned()));
    }
    let mut child = match Running::start(&args.command, &env) {
        Ok(child) => child,
        Err(exit) => {
            let _ = guard.release().await;
            return Ended::NotStarted(exit);
        }
    };
    let mut signalled = false;
    loop {
        tokio::select! {
            status = child.wait() => {
                let released = guard.release().await;
                let code = match status {
                    Ok(status) => status_code(status),
                    Err(err) => return Ended::NotStarted(Exit::fail(exit::FAILURE, format!("waiting for the command: {err}"))),
                };
                if let Err(err) = released {
                    // The command finished; the lock went at the same moment. Its status stands.
                    crate::say(&format!("syncctl: releasing lock {name} after the command exited: {err}"));
                }
                return Ended::Exited { code, signalled };
            }
            () = guard.lost() => return Ended::Lost(lost(&mut child, name, grace, &guard).await),
            signal = signals.recv() => {
                signalled = true;
                child.signal(signal);
            }
        }
    }
}

/// The lock was lost: stop the command's process group.
async fn lost(child: &mut Running, name: &str, grace: Duration, guard: &LockGuard) -> Exit {
    let reason = guard
        .loss_signal()
        .reason()
        .unwrap_or_else(|| "no reason given".into());
    crate::say(&format!(
        "syncctl: lock {name} was lost ({reason}); stopping the command (process group {}): \
         SIGTERM, then SIGKILL after {}",
        child.pid(),
        humantime::format_duration(grace)
    ));
    match child.stop(grace).await {
        Ok(status) => Exit::fail(
            exit::LOST,
            format!(
                "the command was stopped because lock {name} was lost (its own status: {})",
                status_code(status)
            ),
        ),
        Err(err) => Exit::fail(exit::LOST, format!("stopping the command: {err}")),
    }
}

/// Runs `args.command` under the lock; returns how syncctl exits.
pub async fn run(client: &Client, args: RunArgs) -> Exit {
    let mut signals = match Signals::listen() {
        Ok(signals) => signals,
        Err(exit) => return exit,
    };
    let lock = args.handle(client);
    let guard = match acquire(&lock, args.wait, &mut signals).await {
        Ok(guard) => guard,
        Err(exit) => return exit,
    };
    match hold(guard, &args.lock, &args.hold, &mut signals).await {
        Ended::Exited { code, .. } => Exit::quiet(code),
        Ended::Lost(exit) | Ended::NotStarted(exit) => exit,
    }
}
