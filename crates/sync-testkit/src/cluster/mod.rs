//! A one-node Kubernetes cluster on this machine, for the user's path: `kubectl apply -f
//! deploy/`, pods with the elector as a native sidecar, kube-proxy routing Services.
//!
//! On a [`ControlPlane`] of its own it starts containerd, the kubelet, the scheduler, the
//! controller-manager and kube-proxy, with a pod network on a bridge of its own
//! ([`network`]), and imports the images `scripts/build-images` built from our Dockerfiles
//! ([`images`]). Each component's settings, and why, are in [`components`].
//!
//! It leaves the machine as it found it ([`teardown`]): no host kernel setting changes, and every
//! process, mount, cgroup, nftables table, bridge and folder it made is removed when it is
//! dropped, or by its reaper when the test process ends however it ended. One cluster runs on
//! the machine at a time: a second waits for the first (a lock file).

mod components;
mod images;
mod network;
mod teardown;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use components::NODE_NAME;
pub use images::{ImageArchive, images_dir};
pub(crate) use teardown::HOST_PATHS;

use crate::{ControlPlane, Proc, free_port, temp_dir};
use network::PodNetwork;
use teardown::Teardown;

/// How long the node may take to become Ready (a first start on 2 busy cores).
const READY_WITHIN: Duration = Duration::from_secs(180);

/// The machine-wide lock: kube-proxy's nftables tables have fixed names, so two clusters
/// cannot share a machine.
const LOCK: &str = "sync-testkit-cluster.lock";

/// A control plane and one node, started for real.
pub struct Cluster {
    // Dropped in this order: the teardown first kills what the components left running.
    teardown: Teardown,
    processes: Vec<(&'static str, Proc)>,
    plane: ControlPlane,
    dir: PathBuf,
    network: PodNetwork,
    containerd: PathBuf,
    started_in: Duration,
    _lock: std::fs::File,
}

impl Cluster {
    /// Starts a cluster and waits until its node is Ready and kube-proxy has synced. Panics
    /// with what to run when a binary or an image is missing, and with the component's log
    /// when one fails: never skipped silently.
    pub fn start(test: &str) -> Self {
        check_tools();
        images::check_current();
        let (lock, lock_path) = take_lock();
        teardown::sweep(&std::env::temp_dir());
        let started = Instant::now();

        // The teardown removes the folder, with what the node mounted inside it.
        let dir = temp_dir(&format!("cluster-{test}")).keep();
        let network = PodNetwork::choose();
        let cgroup = dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace("sync-test-", "sync-node-");
        let teardown = Teardown::arm(&dir, &cgroup, &network.bridge, &lock_path);
        for sub in ["logs", "cni/net.d", "cni/ipam", "kubelet", "pods"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        network.create();
        let node = network.node_address();
        let plane = ControlPlane::start_for_node(
            test,
            node,
            &network.service_range(),
            network.kubernetes_service(),
        );
        let mut cluster = Self {
            teardown,
            processes: Vec::new(),
            plane,
            dir,
            containerd: PathBuf::new(),
            network,
            started_in: Duration::ZERO,
            _lock: lock,
        };
        cluster.start_controllers();
        cluster.start_containerd();
        make_cgroup(&cgroup);
        cluster.start_kubelet(node, &cgroup);
        let health = cluster.start_kube_proxy();
        cluster.wait_ready(&health);
        cluster.started_in = started.elapsed();
        eprintln!(
            "cluster for {test}: node {NODE_NAME} Ready at {node} after {:.1?} (API at {})",
            cluster.started_in,
            cluster.plane.url()
        );
        cluster
    }

    /// One cluster shared by every test of this process, started by the first that asks.
    /// Each test works in a namespace of its own. It is never dropped: its reaper tears it
    /// down after this process exits.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| Cluster::start("shared"))
    }

    fn start_controllers(&mut self) {
        let kcm = self.plane.component_kubeconfig(
            "controller-manager",
            "system:kube-controller-manager",
            None,
        );
        let scheduler = self
            .plane
            .component_kubeconfig("scheduler", "system:kube-scheduler", None);
        let mut command =
            components::controller_manager(&kcm, self.plane.ca(), self.plane.service_account_key());
        self.spawn("kube-controller-manager", &mut command);
        self.spawn("kube-scheduler", &mut components::scheduler(&scheduler));
    }

    fn start_containerd(&mut self) {
        let cni = self.dir.join("cni/net.d");
        std::fs::write(
            cni.join("10-sync-node.conflist"),
            self.network.cni_config(&self.dir.join("cni/ipam")),
        )
        .unwrap();
        let (mut command, socket) = components::containerd(&self.dir, &cni);
        self.spawn("containerd", &mut command);
        self.containerd = socket;
        self.wait_for("containerd to answer", Duration::from_secs(30), |c| {
            c.ctr(&["version"]).status.success()
        });
        images::import(&self.containerd);
    }

    fn start_kubelet(&mut self, node: Ipv4Addr, cgroup: &str) {
        let root = self.dir.join("kubelet");
        let root_text = root.display().to_string();
        for args in [
            &["--bind", &root_text, &root_text][..],
            &["--make-shared", &root_text],
        ] {
            let status = Command::new("mount")
                .args(args)
                .status()
                .expect("mount runs");
            assert!(status.success(), "mount {} failed", args.join(" "));
        }
        let kubeconfig = self.plane.component_kubeconfig(
            "kubelet",
            &format!("system:node:{NODE_NAME}"),
            Some("system:nodes"),
        );
        let mut command = components::kubelet(&components::KubeletSetup {
            dir: &self.dir,
            address: node,
            port: free_port(),
            kubeconfig: &kubeconfig,
            ca: self.plane.ca(),
            cgroup,
            containerd: &self.containerd,
        });
        self.spawn("kubelet", &mut command);
    }

    fn start_kube_proxy(&mut self) -> String {
        let kubeconfig = self
            .plane
            .component_kubeconfig("kube-proxy", "system:kube-proxy", None);
        let (mut command, health) =
            components::kube_proxy(&self.dir, &kubeconfig, &self.network.pod_range());
        self.spawn("kube-proxy", &mut command);
        health
    }

    fn spawn(&mut self, name: &'static str, command: &mut Command) {
        let proc = components::spawn(&self.dir, name, command);
        self.processes.push((name, proc));
    }

    /// Waits until the node is Ready and kube-proxy reports its rules synced.
    fn wait_ready(&mut self, proxy_health: &str) {
        let proxy = format!("http://{proxy_health}/healthz");
        self.wait_for("the node to be Ready", READY_WITHIN, |c| {
            c.kubectl_ok(&[
                "get",
                "nodes",
                "-o",
                r#"jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}"#,
            ])
            .trim()
                == "True"
        });
        self.wait_for("kube-proxy to sync", READY_WITHIN, |_| {
            crate::http::get(&proxy).is_ok_and(|(status, _)| status == 200)
        });
    }

    /// Polls `ready` until it holds, or panics with the components' logs after `within`; also
    /// panics at once when a component has exited.
    fn wait_for(&mut self, what: &str, within: Duration, ready: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if ready(self) {
                return;
            }
            for (name, proc) in &mut self.processes {
                if let Some(status) = proc.wait_exit(Duration::ZERO) {
                    panic!(
                        "{name} exited ({status}) while waiting for {what}; the end of its log:\n{}",
                        tail(&components::log_path(&self.dir, name), 40)
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {within:?}; the end of the kubelet's log:\n{}",
                self.log_tail("kubelet", 40)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The control plane: kubectl as the admin, namespaces, tokens.
    pub fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// Creates a namespace named `prefix-N` and waits until pods can run in it: until the
    /// controller-manager has made its `default` ServiceAccount (without which the API refuses
    /// a pod) and its `kube-root-ca.crt` ConfigMap (which every pod's token volume holds).
    pub fn create_namespace(&self, prefix: &str) -> String {
        let namespace = self.plane.create_namespace(prefix);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = ["serviceaccount/default", "configmap/kube-root-ca.crt"]
                .iter()
                .all(|object| {
                    self.kubectl(&["get", object, "-n", &namespace])
                        .status
                        .success()
                });
            if ready {
                return namespace;
            }
            assert!(
                Instant::now() < deadline,
                "namespace {namespace} got no default ServiceAccount within a minute; the end \
                 of the controller-manager's log:\n{}",
                self.log_tail("kube-controller-manager", 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs kubectl as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.plane.kubectl(args)
    }

    /// Runs kubectl as the admin and returns its standard output; panics with its error output
    /// when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        self.plane.kubectl_ok(args)
    }

    /// Runs `ctr` against the node's containerd, in the namespace the kubelet's pods are in.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.containerd)
            .args(["-n", "k8s.io"])
            .args(args)
            .output()
            .expect("ctr runs")
    }

    /// Kills a container through the runtime, as a crash would: SIGKILL to its process, by the
    /// id in its pod's status (`containerd://ID` or `ID`).
    pub fn kill_container(&self, container_id: &str) {
        let id = container_id
            .strip_prefix("containerd://")
            .unwrap_or(container_id);
        let out = self.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
        assert!(
            out.status.success(),
            "ctr tasks kill {id} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The last `lines` lines of a component's log (`kubelet`, `containerd`, `kube-proxy`,
    /// `kube-scheduler`, `kube-controller-manager`).
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        tail(&components::log_path(&self.dir, component), lines)
    }

    /// How long the cluster took to start, from nothing to a Ready node.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The node's address on the pod bridge, where the apiserver listens too.
    pub fn node_address(&self) -> Ipv4Addr {
        self.network.node_address()
    }

    /// The cluster's folder (logs, configuration, the components' state).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.processes.clear();
        self.teardown.run();
    }
}

/// Panics, saying what to run, when a command the node needs is missing.
fn check_tools() {
    for name in [
        "kubelet",
        "kube-scheduler",
        "kube-controller-manager",
        "kube-proxy",
    ] {
        crate::control_plane::binary(name);
    }
    for tool in ["containerd", "ctr", "runc", "nft", "ip", "unshare", "mount"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is missing: run scripts/install-test-deps (it installs containerd, runc, the \
             CNI plugins, nftables, conntrack and buildah from Debian)"
        );
    }
    assert!(
        Path::new("/usr/lib/cni/bridge").exists(),
        "the CNI plugins are missing: run scripts/install-test-deps"
    );
    assert!(
        rustix::process::geteuid().is_root(),
        "the one-node cluster needs root: it makes a bridge, mounts and cgroups"
    );
}

/// Takes the machine-wide cluster lock, waiting for another cluster to end (and for the
/// teardown of one whose process died).
fn take_lock() -> (std::fs::File, PathBuf) {
    let path = std::env::temp_dir().join(LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .expect("opening the cluster lock");
    if file.try_lock().is_err() {
        eprintln!(
            "another one-node cluster runs on this machine; waiting for it ({})",
            path.display()
        );
        file.lock().expect("taking the cluster lock");
    }
    (file, path)
}

/// Makes the kubelet's cgroup in every v1 hierarchy, with the CPUs and memory nodes of the
/// root in its cpuset (a new cpuset has none, and no process could join it).
fn make_cgroup(cgroup: &str) {
    for entry in std::fs::read_dir("/sys/fs/cgroup").expect("/sys/fs/cgroup exists") {
        let hierarchy = entry.unwrap().path();
        if hierarchy.is_dir() {
            std::fs::create_dir_all(hierarchy.join(cgroup))
                .unwrap_or_else(|e| panic!("making {}/{cgroup}: {e}", hierarchy.display()));
        }
    }
    let cpuset = Path::new("/sys/fs/cgroup/cpuset");
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if let Ok(value) = std::fs::read_to_string(cpuset.join(file)) {
            std::fs::write(cpuset.join(cgroup).join(file), value.trim()).unwrap();
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
