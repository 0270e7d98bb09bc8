//! The `sync-elector` binary as a child process: started with the flags a test gives, its log
//! captured, and the address it listens on read from that log.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Proc;

/// Builds the workspace's release elector with cargo (a no-op when it is current) and returns
/// its path, next to the running executable. For harnesses run with `cargo run --release`.
pub fn release_elector() -> anyhow::Result<PathBuf> {
    use anyhow::{Context, bail};
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "sync-elector",
            "--bin",
            "sync-elector",
        ])
        .status()
        .context("running cargo to build the elector (or pass --elector PATH)")?;
    if !status.success() {
        bail!("building the elector failed");
    }
    let path = std::env::current_exe()?.with_file_name("sync-elector");
    if !path.exists() {
        bail!("no elector at {}: pass --elector PATH", path.display());
    }
    Ok(path)
}

/// `target/<profile>/sync-elector` as seen from an integration test of another package: building
/// the workspace's tests builds it there. Panics with what to do when it is missing.
pub fn built_elector() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps");
    let elector = profile_dir.join("sync-elector");
    assert!(
        elector.exists(),
        "{} is missing: build the workspace first (cargo build --workspace, or scripts/test)",
        elector.display()
    );
    elector
}

/// The elector binary, started for real.
pub struct ElectorProc {
    process: Proc,
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
        Self::launch(Command::new(binary), "127.0.0.1:0", identity, args, env)
    }

    /// Runs `command` (the elector binary, or a wrapper such as `ip netns exec NS` followed by
    /// it) as `--listen LISTEN --identity IDENTITY ARGS`, and waits until it says where it listens.
    pub fn launch(
        mut command: Command,
        listen: &str,
        identity: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Self {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .args(["--listen", listen, "--identity", identity])
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("the elector ({program}) does not start: {err}"));
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
                        // The address ends the text line; in a JSON line, a quote ends it.
                        let url = line[at + marker.len()..]
                            .split(['"', ' '])
                            .next()
                            .unwrap_or_default();
                        let _ = tx.send((kind, url.trim().to_owned()));
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
            process: Proc::new(child),
            url: url.unwrap(),
            legacy_url,
            log,
        }
    }

    /// What the elector has logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Asks the elector for its state (SIGUSR1) and returns the dump it logs: its wait queues,
    /// its leases and the store's waiters. `None` if nothing came within a few seconds.
    pub fn state_dump(&self) -> Option<String> {
        let marker = "state dump";
        let before = self.log().iter().filter(|l| l.contains(marker)).count();
        self.signal("USR1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(line) = self.log().iter().filter(|l| l.contains(marker)).nth(before) {
                return Some(line.clone());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// The process: its id, signals, waiting for its exit (dropping the elector kills it).
impl std::ops::Deref for ElectorProc {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.process
    }
}

impl std::ops::DerefMut for ElectorProc {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.process
    }
}
