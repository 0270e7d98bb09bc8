//! `syncctl elect NAME -- CMD`: campaign for NAME, run the command while leader (publishing
//! `--value` to followers), stop it when leadership is lost, and campaign again; `--once` stops
//! after the first term.

use sync_client::Client;

use crate::exit::Exit;
use crate::run::{Ended, HoldArgs, Signals, acquire, hold};

/// What `elect` was asked to do.
#[derive(Debug, clap::Args)]
pub struct ElectArgs {
    /// The election's name (a lock name: up to 253 lower-case letters, digits, '-' and '.').
    #[arg(value_parser = crate::lock_name)]
    pub name: String,
    /// A value followers see while this candidate leads: its address, say.
    #[arg(long)]
    pub value: Option<String>,
    /// Stop after the first term: exit with the command's status, or 76 if leadership was lost.
    #[arg(long)]
    pub once: bool,
    /// The ttl, the grace and the command, as for `run`.
    #[command(flatten)]
    pub hold: HoldArgs,
}

/// Campaigns and leads until `--once` ends it, a signal stops it, or the elector goes away.
pub async fn elect(client: &Client, args: ElectArgs) -> Exit {
    let mut signals = match Signals::listen() {
        Ok(signals) => signals,
        Err(exit) => return exit,
    };
    let mut lock = args.hold.configure(client.lock(&args.name));
    if let Some(value) = &args.value {
        lock = lock.value(value.as_str());
    }
    loop {
        let guard = match acquire(&lock, None, &mut signals).await {
            Ok(guard) => guard,
            Err(exit) => return exit,
        };
        crate::say(&format!(
            "syncctl: leading {} as {} (token {})",
            args.name,
            guard.holder(),
            guard.fencing_token()
        ));
        match hold(guard, &args.name, &args.hold, &mut signals).await {
            // Asked to stop, or one term only: the command's status is ours.
            Ended::Exited { code, signalled } if signalled || args.once => {
                return Exit::quiet(code);
            }
            Ended::Exited { code, .. } => crate::say(&format!(
                "syncctl: the command exited with status {code}; {} handed over, campaigning again",
                args.name
            )),
            Ended::Lost(exit) if args.once => return exit,
            Ended::Lost(exit) => crate::say(&format!(
                "syncctl: {}; campaigning again",
                exit.message.unwrap_or_default()
            )),
            Ended::NotStarted(exit) => return exit,
        }
    }
}
