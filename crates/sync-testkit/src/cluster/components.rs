//! The node's components, as this machine needs them configured (each setting's reason is
//! beside it): containerd, the kubelet (in a mount namespace of its own, so the kernel settings
//! it insists on never reach the host), kube-proxy in nftables mode, the scheduler and the
//! controller-manager.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::images::PAUSE;
use crate::control_plane::binary;
use crate::{Proc, free_port};

/// The node's name.
pub const NODE_NAME: &str = "sync-node";

/// The kernel settings the kubelet checks at start and writes when they differ, with the values
/// it wants. It runs with each of these `/proc/sys` files covered by a file of ours that already
/// holds that value, in its own mount namespace: it is content, and the host keeps its own.
const KUBELET_SYSCTLS: [(&str, &str); 6] = [
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// Starts `command` with its output in `dir/logs/name.log`.
pub(crate) fn spawn(dir: &Path, name: &str, command: &mut Command) -> Proc {
    let log = std::fs::File::create(log_path(dir, name)).expect("creating a component's log");
    Proc::new(
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}")),
    )
}

/// Where component `name` logs.
pub(crate) fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("logs").join(format!("{name}.log"))
}

/// containerd with a root, state and socket of its own; runc with the cgroupfs driver; the CNI
/// plugins Debian installs; pod network namespaces mounted under its state folder.
pub(crate) fn containerd(dir: &Path, cni_conf_dir: &Path) -> (Command, PathBuf) {
    let root = dir.join("containerd");
    let socket = root.join("containerd.sock");
    let config = format!(
        r#"version = 2
root = "{root}/root"
state = "{root}/state"
# Snapshotters this machine has no use for, and tracing.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  # The pause container asks for oom_score_adj -998, which root here may not set: without this
  # every sandbox fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "{root}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
        root = root.display(),
        socket = socket.display(),
        cni = cni_conf_dir.display(),
    );
    std::fs::create_dir_all(&root).unwrap();
    let path = root.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new("containerd");
    command.arg("--config").arg(path);
    (command, socket)
}

/// What the kubelet is told.
pub(crate) struct KubeletSetup<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) address: Ipv4Addr,
    pub(crate) port: u16,
    pub(crate) kubeconfig: &'a Path,
    pub(crate) ca: &'a Path,
    pub(crate) cgroup: &'a str,
    pub(crate) containerd: &'a Path,
}

/// The kubelet, in a mount namespace of its own that covers the kernel settings it writes
/// ([`KUBELET_SYSCTLS`]). Its root folder is a shared mount, so the volumes it mounts there
/// (service-account tokens) reach containerd in the host's namespace.
pub(crate) fn kubelet(setup: &KubeletSetup) -> Command {
    let dir = setup.dir;
    let root = dir.join("kubelet");
    let config = format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {address}
port: {port}
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
containerRuntimeEndpoint: unix://{containerd}
# This machine's cgroups are v1, which kubelet 1.37 refuses unless told, with no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup}
failSwapOn: false
podLogsDir: {logs}
# Without this it adds KUBE-FIREWALL and hint chains to the host's iptables; kube-proxy in
# nftables mode needs none of them.
makeIPTablesUtilChains: false
# The images are imported, never pulled: nothing may delete them, and a busy disk must not
# evict the tests' pods.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}}
serializeImagePulls: false
resolvConf: /etc/resolv.conf
"#,
        address = setup.address,
        port = setup.port,
        ca = setup.ca.display(),
        containerd = setup.containerd.display(),
        cgroup = setup.cgroup,
        logs = dir.join("pods").display(),
    );
    let config_path = dir.join("kubelet.yaml");
    std::fs::write(&config_path, config).unwrap();

    let sysctls = dir.join("sysctl");
    std::fs::create_dir_all(&sysctls).unwrap();
    let mut script = String::from("mount --make-rprivate /proc");
    for (i, (name, value)) in KUBELET_SYSCTLS.iter().enumerate() {
        let file = sysctls.join(i.to_string());
        std::fs::write(&file, value).unwrap();
        script.push_str(&format!(
            " && mount --bind {} /proc/sys/{name}",
            file.display()
        ));
    }
    script.push_str(r#" && exec "$0" "$@""#);

    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "unchanged", "sh", "-c", &script])
        .arg(binary("kubelet"))
        .arg("--config")
        .arg(&config_path)
        .arg("--kubeconfig")
        .arg(setup.kubeconfig)
        .args(["--hostname-override", NODE_NAME])
        .args(["--node-ip", &setup.address.to_string()])
        .arg("--root-dir")
        .arg(&root)
        .arg("--cert-dir")
        .arg(root.join("pki"))
        .args(["--v", "2"]);
    command
}

/// kube-proxy in nftables mode, changing no kernel setting (conntrack limits left alone), with
/// NodePorts only on the bridge's range. Returns the command and its health address.
pub(crate) fn kube_proxy(dir: &Path, kubeconfig: &Path, pod_range: &str) -> (Command, String) {
    let health = format!("127.0.0.1:{}", free_port());
    let config = format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {{kubeconfig: {kubeconfig}}}
hostnameOverride: {NODE_NAME}
healthzBindAddress: {health}
metricsBindAddress: 127.0.0.1:{metrics}
# Traffic from outside the pods' range (the host) to a Service is masqueraded.
clusterCIDR: {pod_range}
nodePortAddresses: ["{pod_range}"]
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
"#,
        kubeconfig = kubeconfig.display(),
        metrics = free_port(),
    );
    let path = dir.join("kube-proxy.yaml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(binary("kube-proxy"));
    command.arg("--config").arg(path).args(["--v", "1"]);
    (command, health)
}

/// The controller-manager: ReplicaSets, pods, tokens, the root CA in every namespace, the
/// node's lifecycle. Each controller uses its own service account, as in a real cluster
/// (without it the node's not-ready taint is never removed).
pub(crate) fn controller_manager(kubeconfig: &Path, ca: &Path, signing_key: &Path) -> Command {
    let mut command = Command::new(binary("kube-controller-manager"));
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--use-service-account-credentials=true")
        .arg("--service-account-private-key-file")
        .arg(signing_key)
        .arg("--root-ca-file")
        .arg(ca)
        .args(["--leader-elect=false", "--secure-port", "0", "--v", "1"]);
    command
}

/// The scheduler.
pub(crate) fn scheduler(kubeconfig: &Path) -> Command {
    let mut command = Command::new(binary("kube-scheduler"));
    command.arg("--kubeconfig").arg(kubeconfig).args([
        "--leader-elect=false",
        "--secure-port",
        "0",
        "--v",
        "1",
    ]);
    command
}
