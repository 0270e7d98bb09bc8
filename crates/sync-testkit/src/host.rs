//! What a test must leave on this machine as it found it: network links, addresses and routes,
//! nftables rules, mounts, cgroups, host-wide kernel settings, the folders Kubernetes components
//! make at fixed paths, and the cluster's processes. [`HostState::capture`] reads them;
//! [`HostState::differences`] names what changed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// The host-wide kernel settings a node could touch: the kubelet's, forwarding, the bridge's
/// netfilter hooks, conntrack's limits, localnet routing.
const SYSCTL_FILES: [&str; 10] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "net/netfilter/nf_conntrack_max",
    "net/ipv4/ip_local_reserved_ports",
];

/// Folders of host-wide settings read whole.
const SYSCTL_DIRS: [&str; 3] = ["net/ipv4/conf/all", "net/ipv4/conf/default", "net/bridge"];

/// Folders buildah and Kubernetes tools make at fixed paths, besides the cluster's own
/// ([`crate::cluster::HOST_PATHS`]).
const MORE_PATHS: [&str; 2] = ["/var/lib/containers", "/etc/kubernetes"];

/// The process names of a cluster and its pods.
const PROCESSES: [&str; 11] = [
    "containerd",
    "containerd-shim",
    "runc",
    "kubelet",
    "kube-proxy",
    "kube-apiserver",
    "kube-controller",
    "kube-scheduler",
    "pause",
    "sync-elector",
    "election",
];

/// One reading of the machine, section by section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState(BTreeMap<&'static str, String>);

impl HostState {
    /// Reads the machine now.
    pub fn capture() -> Self {
        let mut state = BTreeMap::new();
        state.insert("links", links());
        state.insert("addresses", run("ip", &["-br", "addr", "show"]));
        state.insert("routes", run("ip", &["route", "show", "table", "all"]));
        state.insert(
            "nftables",
            without_counters(&run("nft", &["list", "ruleset"])),
        );
        state.insert("mounts", mounts());
        state.insert("cgroups", cgroups());
        state.insert("sysctls", sysctls());
        state.insert("paths", paths());
        state.insert("processes", processes());
        Self(state)
    }

    /// Reads the machine once the processes of earlier tests are gone: a test process's reapers
    /// end its control plane and cluster a second or two after it exits, so a reading taken at
    /// once could count them. Waits up to a minute for every process whose arguments name a
    /// `sync-test-` folder to end.
    pub fn capture_settled() -> Self {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline && test_processes() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        Self::capture()
    }

    /// What differs in `later`, section by section, as lines added (`+`) and gone (`-`).
    pub fn differences(&self, later: &HostState) -> Vec<String> {
        let mut found = Vec::new();
        for (section, before) in &self.0 {
            let after = later.0.get(section).map_or("", String::as_str);
            let before_lines: Vec<&str> = before.lines().collect();
            let after_lines: Vec<&str> = after.lines().collect();
            for line in &after_lines {
                if !before_lines.contains(line) {
                    found.push(format!("{section}: + {line}"));
                }
            }
            for line in &before_lines {
                if !after_lines.contains(line) {
                    found.push(format!("{section}: - {line}"));
                }
            }
        }
        found
    }
}

fn run(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("{program} failed: {e}"))
}

/// Link names, without the peer index a veth's name carries (`veth1@if2`).
fn links() -> String {
    let mut names: Vec<String> = run("ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|line| line.split(':').nth(1))
        .map(|name| name.trim().split('@').next().unwrap_or("").to_owned())
        .collect();
    names.sort();
    names.join("\n")
}

/// The ruleset without packet and byte counters, which move with any traffic.
fn without_counters(ruleset: &str) -> String {
    ruleset
        .lines()
        .map(|line| {
            let mut words: Vec<&str> = Vec::new();
            let mut skip = 0;
            for word in line.split_whitespace() {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                if word == "packets" || word == "bytes" {
                    skip = 1;
                    continue;
                }
                words.push(word);
            }
            words.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn mounts() -> String {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .collect();
    points.sort();
    points.join("\n")
}

/// The cgroups directly under each hierarchy's root.
fn cgroups() -> String {
    let mut found = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for child in std::fs::read_dir(hierarchy.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if child.path().is_dir() {
                found.push(child.path().display().to_string());
            }
        }
    }
    found.sort();
    found.join("\n")
}

fn sysctls() -> String {
    let root = Path::new("/proc/sys");
    let mut files: Vec<String> = SYSCTL_FILES.iter().map(|f| (*f).to_owned()).collect();
    for dir in SYSCTL_DIRS {
        for entry in std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            files.push(format!("{dir}/{}", entry.file_name().to_string_lossy()));
        }
    }
    files.sort();
    files
        .iter()
        .filter_map(|file| {
            let value = std::fs::read_to_string(root.join(file)).ok()?;
            Some(format!("{file} = {}", value.trim()))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn paths() -> String {
    crate::cluster::HOST_PATHS
        .iter()
        .chain(&MORE_PATHS)
        .filter(|path| Path::new(path).exists())
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

/// How many processes of each cluster name run (zombies aside).
fn processes() -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "PID (COMM) STATE ...": zombies are gone, only not yet reaped by their parent.
        let Some((comm, rest)) = stat
            .split_once(" (")
            .and_then(|(_, rest)| rest.rsplit_once(") "))
        else {
            continue;
        };
        if rest.starts_with('Z') {
            continue;
        }
        if let Some(name) = PROCESSES.iter().find(|name| comm.starts_with(*name)) {
            *counts.entry(name).or_default() += 1;
        }
    }
    counts
        .iter()
        .map(|(name, count)| format!("{name}: {count}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How many processes other than this one have arguments naming a `sync-test-` folder.
fn test_processes() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy() != me.as_str())
        .filter(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("/sync-test-"))
        })
        .count()
}
