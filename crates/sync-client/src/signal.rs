//! Resigning when the program is asked to stop: [`shutdown_signal`] completes on SIGTERM or
//! Ctrl-C, and [`Election::run_until`](crate::Election::run_until) resigns when it does.
//!
//! Why a program needs this: Kubernetes stops a pod by sending SIGTERM to each container's main
//! process, and sends SIGKILL only after the grace period (30 s by default). In a container that
//! process is PID 1, and the kernel gives PID 1 no default action for SIGTERM: a program that does
//! not handle it is not stopped, it goes on holding its lock, and the next replica waits out the
//! whole grace period. A program that handles it releases at once, and the next replica takes
//! over in milliseconds.

/// Completes when the process receives SIGTERM or SIGINT (Ctrl-C); on platforms without Unix
/// signals, on Ctrl-C alone. Each call listens anew, so it can be awaited in several places.
///
/// If the handlers cannot be installed (no signal support in the runtime), it never completes,
/// and the program runs as it would without it.
///
/// Release a lock when asked to stop:
///
/// ```no_run
/// # async fn run() -> sync_client::Result<()> {
/// let guard = sync_client::Lock::new("test").acquire().await?;
/// tokio::select! {
///     () = tokio::time::sleep(std::time::Duration::from_secs(45)) => {} // the work
///     () = sync_client::shutdown_signal() => eprintln!("asked to stop: releasing"),
/// }
/// guard.release().await?;
/// # Ok(()) }
/// ```
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
