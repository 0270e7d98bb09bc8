//! Real etcd members, started on loopback ports picked at run time, with data in a temporary
//! folder: Debian's `etcd-server` for our etcd store, or another etcd binary (the 3.6 server that
//! `scripts/install-test-deps` builds for the real kube-apiserver).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, signal_pid, temp_dir};

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// A cluster of etcd processes.
pub struct EtcdCluster {
    binary: PathBuf,
    members: Vec<Member>,
    dir: crate::TempDir,
    initial_cluster: String,
    /// Addresses besides 127.0.0.1 the members also serve clients on (network namespaces).
    extra_hosts: Vec<String>,
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster answers. Panics with what to install
    /// when etcd is missing: it is never skipped silently.
    pub fn start(size: usize, test: &str) -> Self {
        Self::start_on(size, test, &[])
    }

    /// Starts `size` members that serve clients on 127.0.0.1 and also on each of `extra_hosts`
    /// (addresses the caller created, such as the host side of a veth pair), each on the member's
    /// client port.
    pub fn start_on(size: usize, test: &str, extra_hosts: &[String]) -> Self {
        assert!(
            Command::new("etcd").arg("--version").output().is_ok(),
            "etcd is not installed: run scripts/test (it installs Debian's etcd-server), or apt-get install etcd-server etcd-client"
        );
        Self::start_binary(Path::new("etcd"), size, test, extra_hosts)
    }

    /// Starts `size` members of the etcd server `binary` (health is still checked with
    /// Debian's `etcdctl`, which speaks the same v3 API).
    pub fn start_binary(binary: &Path, size: usize, test: &str, extra_hosts: &[String]) -> Self {
        let dir = temp_dir(&format!("etcd-{test}"));
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            binary: binary.to_owned(),
            members,
            dir,
            initial_cluster,
            extra_hosts: extra_hosts.to_vec(),
        };
        for i in 0..size {
            cluster.spawn(i, "new");
        }
        cluster.wait_healthy(&(0..size).collect::<Vec<_>>());
        cluster
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let m = &self.members[i];
        let data = self.dir.join(&m.name);
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let listen_client = std::iter::once(client.clone())
            .chain(
                self.extra_hosts
                    .iter()
                    .map(|host| format!("http://{host}:{}", m.client_port)),
            )
            .collect::<Vec<_>>()
            .join(",");
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(&self.binary)
            .args(["--name", &m.name, "--data-dir", &data.display().to_string()])
            .args([
                "--listen-client-urls",
                &listen_client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &self.initial_cluster,
                "--initial-cluster-state",
                state,
            ])
            .args([
                "--initial-cluster-token",
                "sync-test",
                "--logger",
                "zap",
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        self.members[i].child = Some(child);
    }

    /// The folder that holds every member's data.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The client endpoint of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    /// gRPC messages member `i` has received, by method, from its Prometheus metrics
    /// (`grpc_server_msg_received_total`): a unary call is one message, and so is each
    /// keep-alive sent on a stream.
    pub fn received(&self, i: usize) -> anyhow::Result<std::collections::HashMap<String, f64>> {
        use anyhow::Context;
        let (_, text) = crate::http::get(&format!("http://{}/metrics", self.endpoint(i)))
            .context("reading etcd's metrics")?;
        let mut by_method = std::collections::HashMap::new();
        for line in text
            .lines()
            .filter(|l| l.starts_with("grpc_server_msg_received_total{"))
        {
            let method = line
                .split("grpc_method=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("?");
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            *by_method.entry(method.to_owned()).or_default() += value;
        }
        Ok(by_method)
    }

    /// Every member's client endpoint on `host` (one of the extra hosts), comma-separated.
    pub fn endpoints_on(&self, host: &str) -> String {
        self.members
            .iter()
            .map(|m| format!("{host}:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether member `i` is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// How many members the cluster has.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Every member's client endpoint, comma-separated (for `--etcd-endpoints`).
    pub fn endpoints(&self) -> String {
        (0..self.members.len())
            .map(|i| self.endpoint(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn etcdctl(&self, members: &[usize], args: &[&str]) -> Option<String> {
        let endpoints = members
            .iter()
            .map(|i| self.endpoint(*i))
            .collect::<Vec<_>>()
            .join(",");
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &endpoints,
                "--dial-timeout",
                "1s",
                "--command-timeout",
                "2s",
            ])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until members `members` report healthy (a leader and quorum).
    pub fn wait_healthy(&self, members: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.etcdctl(members, &["endpoint", "health"]).is_none() {
            assert!(
                Instant::now() < deadline,
                "etcd members {members:?} never became healthy"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The index of the current leader, as the members report it.
    pub fn leader(&self) -> usize {
        let live: Vec<usize> = (0..self.members.len())
            .filter(|i| self.members[*i].child.is_some())
            .collect();
        let status = self
            .etcdctl(&live, &["endpoint", "status", "--write-out", "json"])
            .expect("etcd answers");
        let statuses: serde_json::Value = serde_json::from_str(&status).unwrap();
        let entries = statuses.as_array().unwrap();
        let leader = entries[0]["Status"]["leader"].as_u64().unwrap();
        for entry in entries {
            if entry["Status"]["header"]["member_id"].as_u64() == Some(leader) {
                let endpoint = entry["Endpoint"].as_str().unwrap();
                return (0..self.members.len())
                    .find(|i| endpoint.ends_with(&format!(":{}", self.members[*i].client_port)))
                    .unwrap();
            }
        }
        panic!("no leader among {entries:?}");
    }

    /// Kills member `i` (SIGKILL); its data stays for a restart.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts a killed member with its data.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i, "existing");
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) member `i`.
    pub fn pause(&self, i: usize, paused: bool) {
        if let Some(child) = &self.members[i].child {
            signal_pid(child.id(), if paused { "STOP" } else { "CONT" });
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.pause(i, false);
            self.kill(i);
        }
    }
}
