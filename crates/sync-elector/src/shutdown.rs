//! The signals the elector answers: SIGTERM (a pod being stopped) and SIGINT end it; SIGUSR1 asks
//! it to log what it is waiting for.

use tokio::signal::unix::{SignalKind, signal};

/// Resolves on the first SIGTERM or SIGINT, naming it.
pub async fn signalled() -> std::io::Result<&'static str> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Calls `dump` on every SIGUSR1, for as long as the elector runs.
pub fn dump_on_sigusr1(dump: impl Fn() + Send + 'static) -> std::io::Result<()> {
    let mut usr1 = signal(SignalKind::user_defined1())?;
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            dump();
        }
    });
    Ok(())
}
