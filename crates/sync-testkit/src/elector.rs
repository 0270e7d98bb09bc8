//! The `sync-elector` binary as a child process: started with the flags a test gives, its log
//! captured, and the address it listens on read from that log.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{signal_pid, wait_child};

/// The elector binary, started for real.
pub struct ElectorProc {
    child: Child,
    /// Base URL of the v1 API.
    pub url: String,
    /// Base URL of the legacy-only listener, when `--legacy-listen` was given.
    pub legacy_url: Option<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl ElectorProc {
    /// Starts the elector `binary` as `--listen 127.0.0.1:0 --identity IDENTITY ARGS`, with extra
    /// environment, and waits until it says where it listens.
    pub fn spawn(binary: &Path, identity: &str, args: &[&str], env: &[(&str, String)]) -> Self {
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--identity", identity])
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("the elector {} does not start: {err}", binary.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for (marker, kind) in [
                    ("legacy protocol listening on ", "legacy"),
                    ("listening on ", "v1"),
                ] {
                    if let Some(at) = line.find(marker) {
                        let _ = tx.send((kind, line[at + marker.len()..].trim().to_owned()));
                        break;
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let wants_legacy = args.contains(&"--legacy-listen");
        let (mut url, mut legacy_url) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while url.is_none() || (wants_legacy && legacy_url.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(("v1", u)) => url = Some(u),
                Ok((_, u)) => legacy_url = Some(u),
                Err(_) => panic!("the elector did not start: {:?}", log.lock().unwrap()),
            }
        }
        Self {
            child,
            url: url.unwrap(),
            legacy_url,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`KILL`, `STOP`, `CONT`, `TERM`).
    pub fn signal(&self, signal: &str) {
        signal_pid(self.pid(), signal);
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, within)
    }

    /// What the elector has logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for ElectorProc {
    fn drop(&mut self) {
        signal_pid(self.pid(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
