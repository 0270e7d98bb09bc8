//! Leaving the machine as the cluster found it: the teardown script (`teardown.sh`), run when a
//! cluster is dropped and by a reaper after the test process ends however it ended, and a sweep
//! of clusters whose process died before their reaper finished.
//!
//! The script sits beside the cluster's folder, not in it: it kills every process whose
//! arguments name the folder, and must not name it itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const SCRIPT: &str = include_str!("teardown.sh");

/// Host folders that Kubernetes components make at fixed paths whatever they are told
/// (device-plugin sockets, the CNI result cache, the shims' sockets, container log links).
/// Those missing when a cluster starts are removed whole when it ends.
pub(crate) const HOST_PATHS: [&str; 9] = [
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/lib/containerd",
    "/run/containerd",
    "/var/log/containers",
    "/var/log/pods",
    "/var/run/netns",
    "/etc/cni",
    "/opt/cni",
];

/// The teardown of one cluster: its script, its arguments, and the reaper that runs it after
/// this process ends.
pub(crate) struct Teardown {
    script: PathBuf,
    args: Vec<String>,
    reaper: Option<Child>,
}

impl Teardown {
    /// Writes the teardown of the cluster in `dir` (cgroup `cgroup`, bridge `bridge`) and starts
    /// its reaper, which takes the machine's cluster lock `lock` before it tears down: the test
    /// process's own hold on it ends with the process, and the next cluster must not start until
    /// this one is gone. Call it before the cluster makes anything.
    pub(crate) fn arm(dir: &Path, cgroup: &str, bridge: &str, lock: &Path) -> Self {
        let script = script_path(dir);
        std::fs::write(&script, SCRIPT).expect("writing the teardown script");
        let mut args = vec![
            dir.display().to_string(),
            cgroup.to_owned(),
            bridge.to_owned(),
        ];
        args.extend(
            HOST_PATHS
                .iter()
                .filter(|path| !Path::new(path).exists())
                .map(|path| (*path).to_owned()),
        );
        std::fs::write(owner_path(dir), std::process::id().to_string())
            .expect("writing the cluster's owner");
        std::fs::write(args_path(dir), args.join("\n")).expect("writing the teardown's arguments");
        let reaper = Command::new("sh")
            .args([
                "-c",
                r#"while kill -0 "$0" 2>/dev/null; do sleep 1; done
                   lock=$1 script=$2; shift 2
                   [ -f "$script" ] && flock "$lock" sh "$script" "$@"; rm -f "$script""#,
            ])
            .arg(std::process::id().to_string())
            .arg(lock)
            .arg(&script)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh starts");
        Self {
            script,
            args,
            reaper: Some(reaper),
        }
    }

    /// Runs the teardown now, and stops the reaper.
    pub(crate) fn run(&mut self) {
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
        run_script(&self.script, &self.args);
    }
}

fn script_path(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".teardown.sh");
    PathBuf::from(name)
}

fn owner_path(dir: &Path) -> PathBuf {
    dir.join("owner")
}

fn args_path(dir: &Path) -> PathBuf {
    dir.join("teardown.args")
}

fn run_script(script: &Path, args: &[String]) {
    let status = Command::new("sh")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .expect("sh runs");
    assert!(status.success(), "the cluster's teardown failed: {status}");
    let _ = std::fs::remove_file(script);
}

/// Tears down every cluster in `parent` whose process is gone but whose teardown never ran (its
/// reaper was killed with it). Called with the cluster lock held, so no live cluster is there.
pub(crate) fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let script = entry.path();
        let Some(dir) = script
            .to_str()
            .and_then(|s| s.strip_suffix(".teardown.sh"))
            .map(PathBuf::from)
        else {
            continue;
        };
        // A zombie is dead too: its parent has not reaped it yet.
        let alive = std::fs::read_to_string(owner_path(&dir))
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok())
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| !rest.starts_with('Z'))
            })
            .unwrap_or(false);
        if alive {
            continue;
        }
        eprintln!(
            "tearing down {}, left by a test process that died",
            dir.display()
        );
        match std::fs::read_to_string(args_path(&dir)) {
            Ok(args) => run_script(&script, &args.lines().map(String::from).collect::<Vec<_>>()),
            Err(_) => {
                let _ = std::fs::remove_file(&script);
            }
        }
    }
}
