//! Process helpers: a child process the harness owns, signals by name, waiting for an exit,
//! loopback ports and temporary folders.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Sends a signal by name (`KILL`, `STOP`, `CONT`, `TERM`) to `pid`. Panics if `kill` fails,
/// except for `CONT`, which is sent to processes that may be gone.
pub fn signal_pid(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .expect("kill runs");
    assert!(
        status.success() || signal == "CONT",
        "kill -{signal} {pid} failed"
    );
}

/// How many established TCP connections process `pid` has open to `port` (IPv4 or IPv6), read
/// from `/proc`: the inodes of its sockets, matched against its network namespace's tables.
pub fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter_map(|link| {
                    let link = link.to_string_lossy().into_owned();
                    Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let remote_port = format!(":{port:04X}");
    let established = |line: &&str| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // remote address, state (01: established), inode
        fields.len() > 9
            && fields[2].ends_with(&remote_port)
            && fields[3] == "01"
            && inodes.contains(fields[9])
    };
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .map(|text| text.lines().skip(1).filter(established).count())
        .sum()
}

/// A child process the harness owns. Dropping it wakes it (in case a test paused it with
/// SIGSTOP), kills it and reaps it, so no test leaves a process behind.
pub struct Proc(Child);

impl Proc {
    /// Takes ownership of `child`.
    pub fn new(child: Child) -> Self {
        Self(child)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends a signal by name (`KILL`, `STOP`, `CONT`, `TERM`, `USR1`).
    pub fn signal(&self, signal: &str) {
        signal_pid(self.pid(), signal);
    }

    /// Waits up to `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.0, within)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        signal_pid(self.pid(), "CONT");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to `within` for `child` to exit.
pub fn wait_child(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh temporary folder named for `purpose`, this process and this call, removed when the
/// returned guard is dropped.
///
/// A test that panics keeps its folder, and says where it is, so that its logs can be read.
pub fn temp_dir(purpose: &str) -> TempDir {
    // Unique per call, not only per process: `cargo test` runs a binary's tests as threads of one
    // process, and tests with the same purpose (every etcd conformance test starts a member
    // named "conformance") would otherwise wipe each other's folders while they run.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("sync-test-{purpose}-{}-{call}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A temporary folder from [`temp_dir`]: a [`Path`](std::path::Path) that removes itself when
/// dropped, unless the thread is panicking.
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// The folder's path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// Hands the folder over to the caller, who removes it (or means to keep it).
    pub fn keep(mut self) -> std::path::PathBuf {
        std::mem::take(&mut self.0)
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.0.as_os_str().is_empty() {
            // Handed over by `keep`.
        } else if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The CPU model, cores, memory and kernel of this machine.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB, Linux {}",
        Command::new("uname")
            .arg("-r")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::temp_dir;

    #[test]
    fn a_temp_dir_is_removed_when_dropped_and_kept_when_its_thread_panics() {
        let dir = temp_dir("drop");
        std::fs::write(dir.join("log"), "x").unwrap();
        let path = dir.to_path_buf();
        drop(dir);
        assert!(!path.exists(), "{} is still there", path.display());

        let path = std::thread::spawn(|| {
            let dir = temp_dir("panic");
            let path = dir.to_path_buf();
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let _dir = dir;
                panic!("the test failed");
            }));
            path
        })
        .join()
        .unwrap();
        assert!(path.exists(), "a failed test's folder was removed");
        std::fs::remove_dir_all(&path).unwrap();

        let kept = temp_dir("keep").keep();
        assert!(kept.exists());
        std::fs::remove_dir_all(&kept).unwrap();
    }
}
