//! The command syncctl runs: started in a process group of its own, so that stopping it stops
//! everything it started; signals passed on to that group; stopped with SIGTERM, then SIGKILL
//! after a grace period.

use std::ffi::OsString;
use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::exit::{self, Exit};

/// A running command.
pub struct Running {
    child: Child,
    group: Pid,
}

impl Running {
    /// Starts `argv` with `env` added to syncctl's own environment, in a new process group.
    pub fn start(argv: &[OsString], env: &[(&str, String)]) -> Result<Self, Exit> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| Exit::fail(exit::USAGE, "no command given: put it after `--`"))?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|err| {
                let name = program.to_string_lossy();
                match err.kind() {
                    io::ErrorKind::NotFound => {
                        Exit::fail(exit::NOT_FOUND, format!("{name}: command not found"))
                    }
                    io::ErrorKind::PermissionDenied => {
                        Exit::fail(exit::NOT_EXECUTABLE, format!("{name}: permission denied"))
                    }
                    _ => Exit::fail(exit::NOT_EXECUTABLE, format!("{name}: {err}")),
                }
            })?;
        let pid = child
            .id()
            .ok_or_else(|| Exit::fail(exit::FAILURE, "the command exited at once"))?;
        Ok(Self {
            child,
            group: Pid::from_raw(pid as i32),
        })
    }

    /// The command's process id, which is also its process group's.
    pub fn pid(&self) -> i32 {
        self.group.as_raw()
    }

    /// Sends `signal` to the command's process group. A group that is gone is not an error.
    pub fn signal(&self, signal: Signal) {
        let _ = killpg(self.group, signal);
    }

    /// Waits for the command to exit.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Stops the command: SIGTERM to its group, SIGKILL after `grace` if it has not exited.
    pub async fn stop(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                self.signal(Signal::SIGKILL);
                self.child.wait().await
            }
        }
    }
}

/// The status syncctl passes on for the command's `status`: its code, or 128 + the signal that
/// killed it, as a shell reports it.
pub fn status_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        (None, Some(signal)) => exit::signalled(signal),
        (None, None) => exit::FAILURE,
    }
}
