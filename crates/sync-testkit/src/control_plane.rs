//! A real Kubernetes control plane on loopback: kube-apiserver and its etcd 3.6 server, both
//! built from their published Go modules by `scripts/install-test-deps`, on ports picked at run
//! time, with certificates made for the run ([`crate::pki`]), RBAC authorization, an admin
//! identity and its kubeconfig, a kubeconfig per user a test names, and an audit log of every
//! Lease request by user, which [`ControlPlane::requests`] counts.
//!
//! Alone, only the API runs: no kubelet, scheduler or controller-manager, so objects are stored,
//! served and watched, and pods never start. Tests can kill, pause and restart the apiserver and
//! its etcd. [`crate::Cluster`] starts one for a node instead: on the node's bridge address, with
//! the Node authorizer, the `kubernetes` Service's endpoint kept by the apiserver, and what
//! `kubectl logs` and `exec` need to reach the kubelet.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::pki::Pki;
use crate::{EtcdCluster, free_port, signal_pid, temp_dir};

/// How long a start or restart may take before the fixture gives up (a first start on 2 busy
/// cores takes several seconds).
const READY_WITHIN: Duration = Duration::from_secs(90);

/// The folder `scripts/install-test-deps` builds the control plane into:
/// `$SYNC_CONTROL_PLANE_DIR`, else `${XDG_CACHE_HOME:-$HOME/.cache}/sync-rs/control-plane`.
pub fn control_plane_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SYNC_CONTROL_PLANE_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    cache.join("sync-rs").join("control-plane")
}

/// A built control-plane binary (`kube-apiserver` or `etcd`). Panics with what to run when it
/// is missing: these tests are never skipped silently.
pub(crate) fn binary(name: &str) -> PathBuf {
    let path = control_plane_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps (it builds kube-apiserver, etcd 3.6 and client-go-elector from \
         their Go modules, once) or scripts/test",
        path.display()
    );
    path
}

/// What the audit log records: each Lease request's metadata (who, which verb), when a watch
/// starts and when any request completes; nothing else.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  resources:
  - group: coordination.k8s.io
    resources: [leases]
- level: None
";

/// kube-apiserver and its etcd, started for real.
pub struct ControlPlane {
    dir: crate::TempDir,
    etcd: EtcdCluster,
    apiserver: Option<Child>,
    address: Ipv4Addr,
    port: u16,
    /// For a node: the Service IP range; the kubelet client certificate and key.
    node: Option<NodeSide>,
    pki: Pki,
    admin: PathBuf,
    reaper: Option<Child>,
}

/// What the apiserver of a cluster with a node has besides the API alone.
struct NodeSide {
    service_range: String,
    kubelet_client: (PathBuf, PathBuf),
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver on 127.0.0.1 and waits until the API is ready and the
    /// `default` namespace exists.
    pub fn start(test: &str) -> Self {
        Self::start_on(test, Ipv4Addr::LOCALHOST, None)
    }

    /// A control plane for a node: the apiserver listens on and advertises `address` (the
    /// node's bridge address, which pods reach), hands out Service IPs from `service_range`
    /// (the first is the `kubernetes` Service's, and the serving certificate names it), keeps
    /// that Service's endpoint itself, and authorizes kubelets with the Node authorizer.
    pub(crate) fn start_for_node(
        test: &str,
        address: Ipv4Addr,
        service_range: &str,
        kubernetes_service_ip: Ipv4Addr,
    ) -> Self {
        Self::start_on(test, address, Some((service_range, kubernetes_service_ip)))
    }

    fn start_on(test: &str, address: Ipv4Addr, node: Option<(&str, Ipv4Addr)>) -> Self {
        let dir = temp_dir(&format!("control-plane-{test}"));
        let extra_names: Vec<String> = match node {
            Some((_, service_ip)) => vec![address.to_string(), service_ip.to_string()],
            None => Vec::new(),
        };
        let pki = Pki::create(&dir, &extra_names).expect("making the control plane's certificates");
        let node = node.map(|(service_range, _)| NodeSide {
            service_range: service_range.to_owned(),
            kubelet_client: pki
                .client(
                    "apiserver-kubelet-client",
                    "kube-apiserver-kubelet-client",
                    Some("system:masters"),
                )
                .expect("making the apiserver's kubelet client certificate"),
        });
        let etcd = EtcdCluster::start_binary(&binary("etcd"), 1, &format!("kube-{test}"), &[]);
        let mut plane = Self {
            admin: dir.join("admin.kubeconfig"),
            reaper: Some(reaper(&dir, etcd.data_dir())),
            dir,
            etcd,
            apiserver: None,
            address,
            port: free_port(),
            node,
            pki,
        };
        std::fs::write(&plane.admin, plane.admin_kubeconfig_text()).unwrap();
        std::fs::write(plane.dir.join("audit-policy.yaml"), AUDIT_POLICY).unwrap();
        let started = Instant::now();
        plane.spawn_apiserver();
        plane.wait_ready();
        eprintln!(
            "control plane for {test}: kube-apiserver ready at {} after {:?}",
            plane.url(),
            started.elapsed()
        );
        plane
    }

    /// One control plane shared by every test of this process that injects no faults, started
    /// by the first that asks. Each such test works in a namespace of its own
    /// ([`Self::create_namespace`]). It is never dropped: its processes are killed and its
    /// folder removed after this process exits.
    pub fn shared() -> &'static ControlPlane {
        static SHARED: OnceLock<ControlPlane> = OnceLock::new();
        SHARED.get_or_init(|| ControlPlane::start("shared"))
    }

    fn spawn_apiserver(&mut self) {
        let pki = &self.pki;
        let path = |p: &Path| p.display().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("kube-apiserver.log"))
            .unwrap();
        let address = self.address.to_string();
        let mut command = Command::new(binary("kube-apiserver"));
        command
            .args([
                "--etcd-servers",
                &format!("http://{}", self.etcd.endpoint(0)),
            ])
            .args(["--bind-address", &address, "--advertise-address", &address])
            .args(["--secure-port", &self.port.to_string()])
            .args(["--cert-dir", &path(&self.dir.join("certs"))])
            .args(["--tls-cert-file", &path(&pki.serving.0)])
            .args(["--tls-private-key-file", &path(&pki.serving.1)])
            .args(["--client-ca-file", &path(&pki.ca)])
            .args([
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
            ])
            .args(["--service-account-key-file", &path(&pki.service_account.1)])
            .args([
                "--service-account-signing-key-file",
                &path(&pki.service_account.0),
            ])
            .args([
                "--audit-policy-file",
                &path(&self.dir.join("audit-policy.yaml")),
            ])
            .args(["--audit-log-path", &path(&self.dir.join("audit.log"))])
            .args(["--profiling=false", "--v", "1"]);
        match &self.node {
            None => {
                command
                    .args(["--authorization-mode", "RBAC"])
                    .args(["--service-cluster-ip-range", "10.96.0.0/16"])
                    // A loopback address cannot be the `kubernetes` Service's endpoint.
                    .args(["--endpoint-reconciler-type", "none"]);
            }
            Some(node) => {
                command
                    // Kubelets may read and write only their own node's pods and objects.
                    .args(["--authorization-mode", "Node,RBAC"])
                    .args(["--enable-admission-plugins", "NodeRestriction"])
                    .args(["--service-cluster-ip-range", &node.service_range])
                    // `kubectl logs` and `exec` go through the kubelet, at the node's address.
                    .args([
                        "--kubelet-client-certificate",
                        &path(&node.kubelet_client.0),
                    ])
                    .args(["--kubelet-client-key", &path(&node.kubelet_client.1)])
                    .args(["--kubelet-preferred-address-types", "InternalIP,Hostname"]);
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("kube-apiserver starts");
        self.apiserver = Some(child);
    }

    /// Waits until `/readyz` answers ok and the `default` namespace exists.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let ready = self.kubectl(&["get", "--raw", "/readyz"]).status.success()
                && self
                    .kubectl(&["get", "namespace", "default"])
                    .status
                    .success();
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver was not ready within {READY_WITHIN:?}; the end of its log:\n{}",
                self.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The last `lines` lines of the apiserver's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("kube-apiserver.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The API's base URL.
    pub fn url(&self) -> String {
        format!("https://{}:{}", self.address, self.port)
    }

    /// The admin's kubeconfig (a client certificate in `system:masters`; namespace `default`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin
    }

    fn admin_kubeconfig_text(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\n{}users:\n- name: admin\n  user:\n    client-certificate: {}\n    client-key: {}\n",
            self.cluster_and_context("admin", "default"),
            self.pki.admin.0.display(),
            self.pki.admin.1.display(),
        )
    }

    fn cluster_and_context(&self, user: &str, namespace: &str) -> String {
        format!(
            "clusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: {user}\n  context:\n    cluster: test\n    user: {user}\n    namespace: {namespace}\ncurrent-context: {user}\n",
            self.url(),
            self.pki.ca.display(),
        )
    }

    /// Writes a kubeconfig that authenticates with bearer `token` (a service account's, from
    /// [`Self::create_token`]) in `namespace`, and returns its path.
    pub fn write_token_kubeconfig(&self, name: &str, token: &str, namespace: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\n{}users:\n- name: {name}\n  user:\n    token: {token}\n",
            self.cluster_and_context(name, namespace),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes a kubeconfig for user `name` (a client certificate of its own, in
    /// `system:masters`, namespace `namespace`) and returns its path. The audit log tells this
    /// user's requests apart: see [`Self::requests`].
    pub fn user_kubeconfig(&self, name: &str, namespace: &str) -> PathBuf {
        let (cert, key) = self.pki.user(name).expect("making a client certificate");
        self.certificate_kubeconfig(&format!("user-{name}"), name, namespace, &cert, &key)
    }

    /// Writes a kubeconfig for a component of the cluster with common name `cn` in group `org`
    /// (such as `system:node:NAME` in `system:nodes`), and returns its path.
    pub(crate) fn component_kubeconfig(&self, file: &str, cn: &str, org: Option<&str>) -> PathBuf {
        let (cert, key) = self
            .pki
            .client(file, cn, org)
            .expect("making a client certificate");
        self.certificate_kubeconfig(file, file, "default", &cert, &key)
    }

    /// The CA that signed the apiserver's serving certificate and every client certificate.
    pub(crate) fn ca(&self) -> &Path {
        &self.pki.ca
    }

    /// The key that signs service-account tokens (the controller-manager signs with it too).
    pub(crate) fn service_account_key(&self) -> &Path {
        &self.pki.service_account.0
    }

    fn certificate_kubeconfig(
        &self,
        file: &str,
        name: &str,
        namespace: &str,
        cert: &Path,
        key: &Path,
    ) -> PathBuf {
        let path = self.dir.join(format!("{file}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\n{}users:\n- name: {name}\n  user:\n    client-certificate: {}\n    client-key: {}\n",
            self.cluster_and_context(name, namespace),
            cert.display(),
            key.display(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Requests to Leases that user `user` has made so far, by verb (`get`, `list`, `create`,
    /// `update`, `patch`, `delete`; `watch` counts watches opened), from the audit log.
    pub fn requests(&self, user: &str) -> std::collections::BTreeMap<String, u64> {
        let log = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        let mut counts = std::collections::BTreeMap::new();
        for line in log.lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if event["user"]["username"] != user {
                continue;
            }
            let verb = event["verb"].as_str().unwrap_or_default();
            let stage = event["stage"].as_str().unwrap_or_default();
            // A watch is counted when it starts; every other request when it completes.
            let counted = if verb == "watch" {
                stage == "ResponseStarted"
            } else {
                stage == "ResponseComplete"
            };
            if counted {
                *counts.entry(verb.to_owned()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Runs kubectl as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.admin)
            .args(args)
            .output()
            .expect("kubectl runs (it is on the image: /usr/bin/kubectl)")
    }

    /// Runs kubectl as the admin and returns its standard output; panics with its error output
    /// when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates a namespace named `prefix-N`, unique in this control plane, and returns its name.
    pub fn create_namespace(&self, prefix: &str) -> String {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "{prefix}-{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        self.kubectl_ok(&["create", "namespace", &name]);
        name
    }

    /// A token for service account `account` in `namespace`, as `kubectl create token` makes
    /// it (the TokenRequest API), valid for an hour.
    pub fn create_token(&self, namespace: &str, account: &str) -> String {
        self.kubectl_ok(&[
            "create",
            "token",
            account,
            "-n",
            namespace,
            "--duration",
            "1h",
        ])
        .trim()
        .to_owned()
    }

    /// Kills kube-apiserver (SIGKILL).
    pub fn kill_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            signal_pid(child.id(), "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts kube-apiserver again on the same port and waits until it is ready.
    pub fn restart_apiserver(&mut self) {
        self.kill_apiserver();
        self.spawn_apiserver();
        self.wait_ready();
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) kube-apiserver.
    pub fn pause_apiserver(&self, paused: bool) {
        if let Some(child) = &self.apiserver {
            signal_pid(child.id(), if paused { "STOP" } else { "CONT" });
        }
    }

    /// The apiserver's etcd (one member, index 0), to kill, pause or restart.
    pub fn etcd(&mut self) -> &mut EtcdCluster {
        &mut self.etcd
    }

    /// What `kube-apiserver --version` prints, such as `Kubernetes v1.37.2`.
    pub fn version() -> String {
        let out = Command::new(binary("kube-apiserver"))
            .arg("--version")
            .output()
            .expect("kube-apiserver runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill_apiserver();
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
    }
}

/// A shell that waits for this process to end, then kills every process whose arguments name
/// `dir` or `etcd_dir` (the apiserver and its etcd) and removes both folders. It covers the
/// shared control plane, which is never dropped, and a test that aborts.
fn reaper(dir: &Path, etcd_dir: &Path) -> Child {
    // The patterns end in '/', which the reaper's own arguments do not, so it never kills itself.
    Command::new("sh")
        .args([
            "-c",
            r#"while kill -0 "$0" 2>/dev/null; do sleep 1; done
               pkill -KILL -f -- "$1/"; pkill -KILL -f -- "$2/"; rm -rf -- "$1" "$2""#,
        ])
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(etcd_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh starts")
}
