//! The one-node cluster leaves this machine as it found it: after it is dropped, and after the
//! test process that started it is killed (its reaper tears it down). In between, a pod from
//! our elector image runs, gets an address on the pod network, and serves its health port to
//! the host, through a ClusterIP Service as well.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sync_testkit::{Cluster, HostState, Proc};

/// The child role: starts a cluster, says so, and waits to be killed.
#[test]
#[ignore = "a role for a child process; a_killed_test_process_leaves_the_host_as_it_found_it starts it"]
fn child_starts_a_cluster_and_waits() {
    let cluster = Cluster::start("killed");
    println!("CLUSTER-READY {}", cluster.dir().display());
    std::thread::sleep(Duration::from_secs(600));
}

/// The tests run one after the other, whether as threads of one process (`cargo test`) or as
/// processes of their own (nextest): each compares the whole machine before and after, so
/// another's cluster must not start in between. A lock file, held for the test's whole run.
fn one_at_a_time() -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("sync-testkit-cluster-tests.lock"))
        .unwrap();
    file.lock().unwrap();
    file
}

fn assert_unchanged(before: &HostState, after: &HostState, when: &str) {
    let differences = before.differences(after);
    assert!(
        differences.is_empty(),
        "{when}, the machine is not as it was:\n{}",
        differences.join("\n")
    );
}

/// Polls `ready` every 250 ms for up to `within`.
fn eventually(within: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    ready()
}

#[test]
fn a_dropped_cluster_leaves_the_host_as_it_found_it_after_running_a_pod() {
    let _alone = one_at_a_time();
    let before = HostState::capture_settled();
    {
        let cluster = Cluster::start("dropped");
        let namespace = cluster.create_namespace("teardown");
        // The elector image as a pod of its own, on the memory store: its health port answers.
        let pod = r#"{"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "elector", "labels": {"app": "elector"}},
            "spec": {"containers": [{"name": "elector", "image": "sync-elector:0.1.0",
                "imagePullPolicy": "Never",
                "args": ["--store=memory", "--health-listen=0.0.0.0:13132"],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 13132}, "periodSeconds": 1}}]}}"#;
        let service = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "elector"},
            "spec": {"selector": {"app": "elector"}, "ports": [{"port": 80, "targetPort": 13132}]}}"#;
        for object in [pod, service] {
            let path = cluster.dir().join("object.json");
            std::fs::write(&path, object).unwrap();
            cluster.kubectl_ok(&["apply", "-n", &namespace, "-f", path.to_str().unwrap()]);
        }
        cluster.kubectl_ok(&[
            "wait",
            "-n",
            &namespace,
            "--for=condition=Ready",
            "pod/elector",
            "--timeout=120s",
        ]);
        let pod_ip = cluster.kubectl_ok(&[
            "get",
            "pod",
            "elector",
            "-n",
            &namespace,
            "-o",
            "jsonpath={.status.podIP}",
        ]);
        let (status, body) =
            sync_testkit::http::get(&format!("http://{pod_ip}:13132/healthz")).unwrap();
        assert_eq!(status, 200, "the pod's health port, from the host: {body}");
        let service_ip = cluster.kubectl_ok(&[
            "get",
            "service",
            "elector",
            "-n",
            &namespace,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        let through_service = eventually(Duration::from_secs(30), || {
            sync_testkit::http::get(&format!("http://{service_ip}:80/readyz"))
                .is_ok_and(|(status, _)| status == 200)
        });
        assert!(
            through_service,
            "the Service {service_ip} reaches the pod through kube-proxy; its log:\n{}",
            cluster.log_tail("kube-proxy", 20)
        );
    }
    assert_unchanged(
        &before,
        &HostState::capture(),
        "after the cluster was dropped",
    );
}

#[test]
fn a_killed_test_process_leaves_the_host_as_it_found_it() {
    let _alone = one_at_a_time();
    let before = HostState::capture_settled();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_starts_a_cluster_and_waits",
            "--ignored",
            "--nocapture",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut child = Proc::new(child);
    let ready = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("CLUSTER-READY ").map(str::to_owned))
        .expect("the child started a cluster");
    child.signal("KILL");
    child.wait_exit(Duration::from_secs(10));
    // The reaper notices within a second, then tears down.
    let torn_down = eventually(Duration::from_secs(60), || {
        !std::path::Path::new(&ready).exists()
    });
    assert!(torn_down, "the reaper removed {ready}");
    let after = eventually(Duration::from_secs(30), || {
        before.differences(&HostState::capture()).is_empty()
    });
    if !after {
        assert_unchanged(
            &before,
            &HostState::capture(),
            "after the test process was killed",
        );
    }
}
