//! The exit statuses of syncctl, one place for the code and the docs (docs/syncctl.md lists
//! them). The command's own status passes through unchanged; ours stay clear of the shells'
//! conventions (126, 127, 128 + N) and come from sysexits(3) where one fits.

/// Bad input: an unknown flag, a bad lock name or duration, no command (as clap's own errors).
pub const USAGE: u8 = 2;
/// A failure that is none of the below: the elector refused a request, say.
pub const FAILURE: u8 = 1;
/// The elector could not be reached (sysexits' `EX_UNAVAILABLE`).
pub const UNREACHABLE: u8 = 69;
/// `--wait` ran out while someone else held the lock (sysexits' `EX_TEMPFAIL`).
pub const NOT_ACQUIRED: u8 = 75;
/// The lock was lost while the command ran, and the command was stopped.
pub const LOST: u8 = 76;
/// The command could not be run: it is not executable (as a shell says).
pub const NOT_EXECUTABLE: u8 = 126;
/// The command could not be run: it was not found (as a shell says).
pub const NOT_FOUND: u8 = 127;

/// The status a shell gives a command killed by signal `signal`.
pub fn signalled(signal: i32) -> u8 {
    (128 + signal).clamp(0, 255) as u8
}

/// Why syncctl stops: a status and, unless the status is the command's own, a message for
/// stderr.
#[derive(Debug)]
pub struct Exit {
    /// The process's exit status.
    pub code: u8,
    /// What to print on stderr first, if anything.
    pub message: Option<String>,
}

impl Exit {
    /// Stops with `code`, saying `message`.
    pub fn fail(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: Some(message.into()),
        }
    }

    /// Stops with `code`, quietly (the command's own status).
    pub fn quiet(code: u8) -> Self {
        Self {
            code,
            message: None,
        }
    }
}

/// An error from the client library, with the status it stands for.
impl From<sync_client::Error> for Exit {
    fn from(err: sync_client::Error) -> Self {
        use sync_client::Error;
        let code = match &err {
            Error::Unreachable { .. } => UNREACHABLE,
            Error::InvalidUrl { .. }
            | Error::InvalidName(_)
            | Error::InvalidPermits { .. }
            | Error::Token { .. } => USAGE,
            Error::Timeout { .. } => NOT_ACQUIRED,
            Error::Lost { .. } => LOST,
            _ => FAILURE,
        };
        Self::fail(code, err.to_string())
    }
}
