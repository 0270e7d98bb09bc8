//! The user's path, on a real node (sync-testkit's `Cluster`, shared by this binary, a namespace
//! per test): the images built from our Dockerfiles, `kubectl apply -f deploy/` exactly as a user
//! runs it, and the README's "On Kubernetes" commands, taken from the README itself.
//!
//! Everything is judged on one clock, the host's: the container runtime stamps every log line
//! with it, and the Lease watch and the Service probes stamp what they see with it. The figures
//! each run measures are printed (`figure: ...`) for docs/kubernetes.md; the assertions hold
//! generous bounds.

#![cfg(feature = "kubernetes")]

mod node;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use node::lease::LeaseWatch;
use node::logs::{Line, Logs};
use node::pods::{Pod, pods};
use node::probe::{Prober, get};
use node::{At, Figures, between, eventually, now};
use sync_testkit::{Cluster, ImageArchive, NODE_NAME, Proc, Prometheus, Target};

/// The election example: its Deployment, its pods' label, and its lock.
const ELECTION: &str = "election-example";
/// The lock example's Deployment and pods' label.
const LOCK_EXAMPLE: &str = "lock-example";
/// The lock example's lock, the seed's.
const LOCK: &str = "test";
/// The leader-only Service.
const SERVICE: &str = "election-leader";
/// The elector's default ttl, which deploy/ keeps.
const TTL: Duration = Duration::from_secs(15);

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The admin's kubeconfig with `namespace` as its context's, so that commands that name no
/// namespace, as the README's do, run there.
fn namespace_kubeconfig(cluster: &Cluster, namespace: &str) -> PathBuf {
    let admin = std::fs::read_to_string(cluster.plane().admin_kubeconfig()).unwrap();
    let text = admin.replace("namespace: default", &format!("namespace: {namespace}"));
    assert_ne!(text, admin, "the admin kubeconfig names its namespace");
    let path = cluster.dir().join(format!("{namespace}.kubeconfig"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The commands of the README's "On Kubernetes" block, in order.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let section = readme
        .split("\n## On Kubernetes")
        .nth(1)
        .expect("the README has an \"On Kubernetes\" section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block in it");
    block
        .lines()
        .filter(|l| l.starts_with("kubectl "))
        .map(String::from)
        .collect()
}

/// The README command that starts with `prefix`.
fn readme_command(commands: &[String], prefix: &str) -> String {
    commands
        .iter()
        .find(|c| c.starts_with(prefix))
        .unwrap_or_else(|| {
            panic!("the README's On Kubernetes steps run `{prefix}...`: {commands:#?}")
        })
        .clone()
}

/// Runs `command` with `sh` in the repository's root folder, with `kubeconfig`.
fn sh(kubeconfig: &Path, command: &str) -> Output {
    Command::new("sh")
        .args(["-c", command])
        .current_dir(repository())
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap()
}

fn sh_ok(kubeconfig: &Path, command: &str) -> String {
    let out = sh(kubeconfig, command);
    assert!(
        out.status.success(),
        "`{command}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `count` pods of `app` are Ready and none is being deleted.
fn wait_ready(cluster: &Cluster, namespace: &str, app: &str, count: usize) -> Vec<Pod> {
    eventually(
        Duration::from_secs(240),
        &format!("{count} Ready pods of {app}"),
        || {
            let now = pods(cluster, namespace, app);
            let ready = now.iter().filter(|p| p.ready && !p.deleting).count();
            (now.len() == count && ready == count).then_some(now)
        },
    )
}

fn service_ip(cluster: &Cluster, namespace: &str, service: &str) -> String {
    cluster.kubectl_ok(&[
        "get",
        "service",
        service,
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
}

/// Leadership as each program believed it, from its log: `(pod, from, to)`, from its "I am the
/// leader!" to its "I lost the leader!", the next start of its program, or the moment a test
/// killed its program (`killed`); `to` is `None` while it still leads.
fn believed(lines: &[Line], killed: &BTreeMap<String, Vec<At>>) -> Vec<(String, At, Option<At>)> {
    let mut spans: Vec<(String, At, Option<At>)> = Vec::new();
    for line in lines.iter().filter(|l| l.container == "example") {
        let open = spans
            .iter()
            .rposition(|(pod, _, to)| *pod == line.pod && to.is_none());
        match line.text.as_str() {
            "I am the leader!" => spans.push((line.pod.clone(), line.at, None)),
            "I lost the leader!" | "Waiting for election" => {
                if let Some(i) = open {
                    spans[i].2 = Some(line.at);
                }
            }
            _ => {}
        }
    }
    // A killed program says nothing more: its belief ended with it.
    for span in &mut spans {
        let end = span.2.unwrap_or(At::MAX_UTC);
        if let Some(kill) = killed
            .get(&span.0)
            .into_iter()
            .flatten()
            .find(|at| **at > span.1 && **at < end)
        {
            span.2 = Some(*kill);
        }
    }
    spans
}

/// Every pair of spans that overlap in time.
fn overlaps(spans: &[(String, At, Option<At>)]) -> Vec<String> {
    let mut found = Vec::new();
    for (i, (a, a_from, a_to)) in spans.iter().enumerate() {
        for (b, b_from, b_to) in &spans[i + 1..] {
            let a_end = a_to.unwrap_or(At::MAX_UTC);
            let b_end = b_to.unwrap_or(At::MAX_UTC);
            if a != b && *a_from < b_end && *b_from < a_end {
                found.push(format!(
                    "{a} [{a_from} .. {a_to:?}] and {b} [{b_from} .. {b_to:?}]"
                ));
            }
        }
    }
    found
}

/// `kubectl apply -f deploy/` and the README's commands, and the election example through
/// deletion, a killed sidecar, a killed program and a rolling restart; the lock example taking
/// turns all the while.
#[test]
fn the_readmes_steps_on_a_real_node() {
    let cluster = Cluster::shared();
    let figures = Figures::default();
    figures.duration(
        "cluster start, nothing to a Ready node",
        cluster.started_in(),
    );
    let namespace = cluster.create_namespace("readme");
    let kubeconfig = namespace_kubeconfig(cluster, &namespace);
    let commands = readme_commands();
    let logs = Logs::follow(cluster, &namespace, &["sync-elector", "example"]);
    let election = LeaseWatch::start(cluster, &namespace, ELECTION);
    let lock = LeaseWatch::start(cluster, &namespace, LOCK);
    let mut killed: BTreeMap<String, Vec<At>> = BTreeMap::new();

    // 1. kubectl apply -f deploy/, as the README has it.
    let applied = now();
    sh_ok(&kubeconfig, &readme_command(&commands, "kubectl apply"));
    let election_pods = wait_ready(cluster, &namespace, ELECTION, 3);
    wait_ready(cluster, &namespace, LOCK_EXAMPLE, 2);
    figures.duration("apply to every pod Ready", between(applied, now()));
    every_pod_runs_its_elector_as_a_native_sidecar_in_cluster(cluster, &namespace, &logs);

    let first = election.wait_for(Duration::from_secs(60), "a leader", |p| p.is_some());
    let leader = first.pod.clone().unwrap();
    figures.duration("apply to first leader", between(applied, first.at));
    assert!(election_pods.iter().any(|p| p.name == leader));

    // 2. The README's watch of the Lease shows the leader.
    let watch = Command::new("sh")
        .args(["-c", &readme_command(&commands, "kubectl get lease")])
        .current_dir(repository())
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut watch = Proc::new(watch);

    // Exactly one program says it leads, and it is the one the Lease names.
    logs.wait_for(Duration::from_secs(30), "I am the leader!", |l| {
        l.text == "I am the leader!"
    });
    std::thread::sleep(Duration::from_secs(2));
    let leading: Vec<String> = logs
        .containing("I am the leader!")
        .into_iter()
        .map(|l| l.pod)
        .collect();
    assert_eq!(
        leading,
        std::slice::from_ref(&leader),
        "one leader, the Lease's"
    );
    // 3. The README's kubectl logs shows it too.
    let said = sh_ok(&kubeconfig, &readme_command(&commands, "kubectl logs"));
    let leader_lines: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("I am the leader!"))
        .collect();
    assert_eq!(leader_lines.len(), 1, "{said}");
    assert!(leader_lines[0].contains(&leader), "{said}");

    // The leader-only Service, from the host through kube-proxy: the leader answers, alone.
    let url = format!("http://{}:80/", service_ip(cluster, &namespace, SERVICE));
    let want = format!("{leader} leads on 8080");
    eventually(
        Duration::from_secs(30),
        "the Service reaching the leader",
        || get(&url).ok().filter(|body| body.trim() == want),
    );
    for _ in 0..20 {
        assert_eq!(get(&url).map(|b| b.trim().to_owned()), Ok(want.clone()));
    }
    let prober = Prober::start(&url, Duration::from_millis(50));

    // 4. The README's `kubectl delete pod` of the leader: it gets SIGTERM, resigns, and another
    // replica leads long before the 30 s grace period would have ended.
    let deleted = now();
    sh_ok(
        &kubeconfig,
        &readme_command(&commands, "kubectl delete pod"),
    );
    let next = election.wait_for(Duration::from_secs(30), "a new leader", |p| {
        p.is_some_and(|p| p != leader)
    });
    let handed_over = between(deleted, next.at);
    figures.duration("pod deleted to new leader", handed_over);
    assert!(
        handed_over < Duration::from_secs(10),
        "the deleted leader resigned on SIGTERM: {handed_over:?}"
    );
    logs.wait_for(
        Duration::from_secs(10),
        "the old leader's resignation",
        |l| l.pod == leader && l.text == "I lost the leader!",
    );
    let new_leader = next.pod.clone().unwrap();
    let switched = eventually(
        Duration::from_secs(30),
        "the Service reaching the new leader",
        || {
            prober
                .answers()
                .into_iter()
                .find(|a| a.at > deleted && a.from() == Some((new_leader.clone(), true)))
        },
    );
    figures.duration(
        "pod deleted to the Service answering from the new leader",
        between(deleted, switched.at),
    );
    figures.duration(
        "new leader to the Service answering from it",
        between(next.at, switched.at),
    );
    std::thread::sleep(Duration::from_secs(2));
    let stray: Vec<String> = prober
        .answers()
        .into_iter()
        .filter(|a| {
            a.at > next.at && a.body.is_ok() && a.from() != Some((new_leader.clone(), true))
        })
        .map(|a| format!("{}: {:?}", a.at, a.body))
        .collect();
    assert!(
        stray.is_empty(),
        "answers from a non-leader after the Lease named {new_leader}: {stray:#?}"
    );
    drop(prober);

    // The leader's sidecar killed through the runtime: its program is told it lost by its own
    // validity count, and another replica leads once the Lease's ttl has passed unrenewed.
    let leader = new_leader;
    let pod = pods(cluster, &namespace, ELECTION)
        .into_iter()
        .find(|p| p.name == leader)
        .unwrap();
    let killed_at = now();
    cluster.kill_container(pod.elector.id.as_deref().expect("the sidecar's id"));
    let next = election.wait_for(TTL * 3, "a leader after the sidecar's death", |p| {
        p.is_some_and(|p| p != leader)
    });
    let took = between(killed_at, next.at);
    figures.duration("elector container killed to new leader (ttl 15 s)", took);
    assert!(took < TTL * 2, "within about a ttl: {took:?}");
    assert!(took >= TTL / 2, "not before its validity ran out: {took:?}");
    let lost = logs.wait_for(Duration::from_secs(5), "the program told it lost", |l| {
        l.pod == leader && l.text == "I lost the leader!" && l.at > killed_at
    });
    figures.duration(
        "elector container killed to its program told it lost",
        between(killed_at, lost.at),
    );

    // The leader's program killed: its sidecar sees the connection close and releases.
    let leader = next.pod.clone().unwrap();
    wait_ready(cluster, &namespace, ELECTION, 3);
    let pod = pods(cluster, &namespace, ELECTION)
        .into_iter()
        .find(|p| p.name == leader)
        .unwrap();
    let killed_at = now();
    killed.entry(leader.clone()).or_default().push(killed_at);
    cluster.kill_container(pod.program.id.as_deref().expect("the program's id"));
    let next = election.wait_for(
        Duration::from_secs(30),
        "a leader after the program's death",
        |p| p.is_some_and(|p| p != leader),
    );
    let took = between(killed_at, next.at);
    figures.duration("program container killed to new leader", took);
    assert!(took < Duration::from_secs(10), "{took:?}");

    // A rolling restart: at no moment two leaders, and exactly one at the end.
    wait_ready(cluster, &namespace, ELECTION, 3);
    let restarted = now();
    cluster.kubectl_ok(&[
        "rollout",
        "restart",
        "-n",
        &namespace,
        &format!("deployment/{ELECTION}"),
    ]);
    cluster.kubectl_ok(&[
        "rollout",
        "status",
        "-n",
        &namespace,
        &format!("deployment/{ELECTION}"),
        "--timeout=300s",
    ]);
    let after = wait_ready(cluster, &namespace, ELECTION, 3);
    figures.duration("rollout restart of 3 replicas", between(restarted, now()));
    let last = election.wait_for(
        Duration::from_secs(30),
        "a leader among the new pods",
        |p| p.is_some_and(|p| after.iter().any(|a| a.name == p)),
    );
    std::thread::sleep(Duration::from_secs(3));
    let changes = election
        .holdings()
        .iter()
        .filter(|(_, from, _)| *from > restarted)
        .count();
    let spans = believed(&logs.lines(), &killed);
    let overlapping = overlaps(&spans);
    figures.record(
        "rollout restart: leader changes, overlaps",
        format!("{changes}, {}", overlapping.len()),
    );
    assert!(
        overlapping.is_empty(),
        "two leaders at once: {overlapping:#?}\n{spans:#?}"
    );
    let open: Vec<&String> = spans
        .iter()
        .filter(|(_, _, to)| to.is_none())
        .map(|(pod, _, _)| pod)
        .collect();
    let last_pod = last.pod.clone().unwrap();
    assert_eq!(
        open,
        [&last_pod],
        "exactly one leader at the end, the Lease's: {spans:#?}"
    );
    assert_eq!(election.pod().as_deref(), Some(last_pod.as_str()));

    // 5. The README's syncctl in a sidecar, and the leadership Events on the Lease.
    let locks = sh_ok(&kubeconfig, &readme_command(&commands, "kubectl exec"));
    assert!(
        locks.contains(ELECTION) && locks.contains(&last_pod),
        "syncctl locks shows the lock and its holder:\n{locks}"
    );
    let described = sh_ok(
        &kubeconfig,
        &readme_command(&commands, "kubectl describe lease"),
    );
    assert!(
        described.contains("LeaderElection") && described.contains(&format!("{last_pod}/")),
        "the Events the pods wrote:\n{described}"
    );
    watch.signal("TERM");
    let _ = watch.wait_exit(Duration::from_secs(5));

    // The lock example, all the while: its two pods took "test" in turn.
    the_lock_examples_pods_took_turns(&lock, &logs, &figures);

    // Only what deploy/rbac.yaml and leader-service.yaml grant was needed.
    let forbidden: Vec<Line> = logs
        .lines()
        .into_iter()
        .filter(|l| l.text.to_lowercase().contains("forbidden"))
        .collect();
    assert!(forbidden.is_empty(), "{forbidden:#?}");
    elector_memory(cluster, &namespace, &figures);
    figures.print();
}

/// Every pod: the elector is an init container that keeps running, started (its startup probe
/// passed) before the program; its probes answer on the pod's address; it found the API by the
/// `kubernetes` Service's ClusterIP and authenticates with the projected token of the
/// `sync-elector` ServiceAccount, which nothing but deploy/ binds.
fn every_pod_runs_its_elector_as_a_native_sidecar_in_cluster(
    cluster: &Cluster,
    namespace: &str,
    logs: &Logs,
) {
    let api = format!("https://{}/", service_ip(cluster, "default", "kubernetes"));
    for app in [ELECTION, LOCK_EXAMPLE] {
        for pod in pods(cluster, namespace, app) {
            let name = &pod.name;
            let init = &pod.spec["initContainers"][0];
            assert_eq!(init["name"], "sync-elector", "{name}");
            assert_eq!(init["restartPolicy"], "Always", "{name}: a native sidecar");
            assert!(
                pod.elector.started && pod.elector.ready,
                "{name}: {:?}",
                pod.elector
            );
            assert_eq!(pod.spec["serviceAccountName"], "sync-elector");
            let mounts = init["volumeMounts"].to_string();
            assert!(
                mounts.contains("/var/run/secrets/kubernetes.io/serviceaccount"),
                "{name}: the projected token is mounted: {mounts}"
            );
            let ip = pod.ip.as_deref().expect("a pod IP");
            for path in ["healthz", "readyz"] {
                let answer = get(&format!("http://{ip}:13132/{path}"));
                assert!(answer.is_ok(), "{name}'s /{path}: {answer:?}");
            }
            let first = |container: &str| {
                logs.wait_for(Duration::from_secs(30), "a first line", |l| {
                    l.pod == *name && l.container == container
                })
            };
            let (elector, program) = (first("sync-elector"), first("example"));
            assert!(
                elector.at < program.at,
                "{name}: the sidecar ran before the program ({elector:?}, {program:?})"
            );
            let found = logs.wait_for(Duration::from_secs(10), "the API's address", |l| {
                l.pod == *name && l.text.contains("using the Kubernetes API")
            });
            assert!(
                found.text.contains(&format!("url={api}")),
                "{name} reached the API through the kubernetes Service ({api}): {}",
                found.text
            );
        }
    }
    // Nothing binds the ServiceAccount but deploy/'s two RoleBindings.
    let bindings = cluster.kubectl_ok(&[
        "get",
        "rolebindings,clusterrolebindings",
        "-A",
        "-o",
        "json",
    ]);
    let bindings: serde_json::Value = serde_json::from_str(&bindings).unwrap();
    let mut bound: Vec<String> = bindings["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| {
            b["subjects"].as_array().into_iter().flatten().any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == "sync-elector"
                    && s["namespace"].as_str().is_none_or(|n| n == namespace)
            }) && b["metadata"]["namespace"]
                .as_str()
                .is_none_or(|n| n == namespace)
        })
        .map(|b| {
            format!(
                "{}/{}",
                b["kind"].as_str().unwrap(),
                b["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    bound.sort();
    assert_eq!(
        bound,
        [
            "RoleBinding/sync-elector",
            "RoleBinding/sync-elector-publish"
        ]
    );
}

/// The Lease `test` went from one lock pod to the other, 45 s each, never held by both; their
/// logs agree.
fn the_lock_examples_pods_took_turns(lock: &LeaseWatch, logs: &Logs, figures: &Figures) {
    let holdings = eventually(Duration::from_secs(240), "three turns of the lock", || {
        let holdings = lock.holdings();
        (holdings.len() >= 3).then_some(holdings)
    });
    for pair in holdings.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "turns alternate: {holdings:#?}");
    }
    for (pod, from, to) in holdings.iter().filter(|h| h.2.is_some()) {
        let held = between(*from, to.unwrap());
        assert!(
            held > Duration::from_secs(40) && held < Duration::from_secs(60),
            "{pod} held test for 45 s: {held:?}"
        );
    }
    let (_, from, to) = &holdings[1];
    figures.duration("lock example: one turn", between(*from, to.unwrap()));
    // From the programs' own words: never both between "Acquired lock" and "Releasing lock.",
    // where each leaves its critical section. ("Lock released." comes after the release, when
    // the next holder may already have logged its grant: CI saw it 19 ms ahead, 2026-12-04.)
    let mut spans: Vec<(String, At, Option<At>)> = Vec::new();
    for line in logs
        .lines()
        .into_iter()
        .filter(|l| l.container == "example")
    {
        if line.text.starts_with("Acquired lock") {
            spans.push((line.pod.clone(), line.at, None));
        } else if line.text == "Releasing lock."
            && let Some(span) = spans
                .iter_mut()
                .rev()
                .find(|(pod, _, to)| *pod == line.pod && to.is_none())
        {
            span.2 = Some(line.at);
        }
    }
    assert!(spans.len() >= 3, "{spans:#?}");
    let overlapping = overlaps(&spans);
    assert!(overlapping.is_empty(), "{overlapping:#?}");
}

/// The elector containers' memory, as the kubelet's stats report it: the working set (what the
/// kubelet evicts by, and what `kubectl top` shows) and the resident set.
fn elector_memory(cluster: &Cluster, namespace: &str, figures: &Figures) {
    let summary = cluster.kubectl_ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{NODE_NAME}/proxy/stats/summary"),
    ]);
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let sidecars: Vec<serde_json::Value> = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["podRef"]["namespace"] == namespace)
        .flat_map(|p| p["containers"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["name"] == "sync-elector")
        .collect();
    assert!(
        !sidecars.is_empty(),
        "the kubelet reports the sidecars: {summary}"
    );
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    for (field, shown) in [
        ("workingSetBytes", "working set"),
        ("rssBytes", "resident set"),
    ] {
        let mut sizes: Vec<u64> = sidecars
            .iter()
            .filter_map(|c| c["memory"][field].as_u64())
            .collect();
        sizes.sort_unstable();
        assert!(
            !sizes.is_empty(),
            "the kubelet reports {field}: {sidecars:?}"
        );
        figures.record(
            &format!("elector container memory, kubelet's {shown}"),
            format!(
                "{:.1} to {:.1} MiB over {} sidecars",
                mib(sizes[0]),
                mib(sizes[sizes.len() - 1]),
                sizes.len()
            ),
        );
    }
}

/// Services whose ports are named, one and two, reach the leader through kube-proxy on each
/// port; a change of the Service's targetPort reaches the slice.
#[test]
fn services_with_named_ports_reach_the_leader_on_each_port() {
    let cluster = Cluster::shared();
    let namespace = cluster.create_namespace("ports");
    let deploy = repository().join("deploy");
    cluster.kubectl_ok(&[
        "apply",
        "-n",
        &namespace,
        "-f",
        &deploy.join("rbac.yaml").display().to_string(),
    ]);
    // Two Services, a Role for them, and the election example publishing its lock to both and
    // answering on both ports: deploy/'s own files, renamed.
    let services = r#"
apiVersion: v1
kind: Service
metadata: {name: one-port}
spec:
  ports: [{name: web, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: two-ports}
spec:
  ports:
    - {name: web, port: 80, targetPort: 8080}
    - {name: admin, port: 81, targetPort: 9090}
"#;
    let leader_service = std::fs::read_to_string(deploy.join("leader-service.yaml")).unwrap();
    let role = leader_service
        .split("\n---\n")
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n---\n")
        .replace(
            r#"resourceNames: ["election-leader"]"#,
            r#"resourceNames: ["one-port", "two-ports"]"#,
        );
    assert!(
        role.contains("two-ports"),
        "the Role limits Services by name"
    );
    let election = std::fs::read_to_string(deploy.join("election.yaml"))
        .unwrap()
        .replace("replicas: 3", "replicas: 2")
        .replace(
            "--publish=election-example=election-leader",
            "--publish=ports-example=one-port,ports-example=two-ports",
        )
        .replace("value: 0.0.0.0:8080", "value: 0.0.0.0:8080,0.0.0.0:9090")
        .replace("election-example", "ports-example");
    assert!(election.contains("one-port,ports-example=two-ports"));
    let path = cluster.dir().join(format!("{namespace}.yaml"));
    std::fs::write(&path, [services, &role, &election].join("\n---\n")).unwrap();
    cluster.kubectl_ok(&["apply", "-n", &namespace, "-f", &path.display().to_string()]);
    wait_ready(cluster, &namespace, "ports-example", 2);
    let lease = LeaseWatch::start(cluster, &namespace, "ports-example");
    let leader = lease
        .wait_for(Duration::from_secs(60), "a leader", |p| p.is_some())
        .pod
        .unwrap();

    let one = service_ip(cluster, &namespace, "one-port");
    let two = service_ip(cluster, &namespace, "two-ports");
    for (url, port) in [
        (format!("http://{one}:80/"), 8080),
        (format!("http://{two}:80/"), 8080),
        (format!("http://{two}:81/"), 9090),
    ] {
        let want = format!("{leader} leads on {port}");
        eventually(Duration::from_secs(30), &format!("{url} answering"), || {
            get(&url).ok().filter(|body| body.trim() == want)
        });
    }
    let slices = cluster.kubectl_ok(&[
        "get",
        "endpointslices",
        "-n",
        &namespace,
        "-l",
        "endpointslice.kubernetes.io/managed-by=sync-elector.metaparticle.io",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={range .ports[*]}{.name}:{.port} {end};{end}",
    ]);
    eprintln!("slices: {slices}");

    // The Service changes its targetPort: the holder's next resync (every 5 s) follows.
    cluster.kubectl_ok(&[
        "patch",
        "service",
        "one-port",
        "-n",
        &namespace,
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/ports/0/targetPort", "value": 9090}]"#,
    ]);
    let want = format!("{leader} leads on 9090");
    eventually(Duration::from_secs(30), "the new targetPort in use", || {
        get(&format!("http://{one}:80/"))
            .ok()
            .filter(|body| body.trim() == want)
    });
}

/// The images as their Dockerfiles made them: the user the manifests expect (distroless's
/// nonroot, 65532), the entrypoints, and every path the manifests and the README use.
#[test]
fn the_images_run_as_nonroot_with_the_entrypoints_and_paths_deploy_uses() {
    for (image, entrypoint, paths) in [
        (
            ImageArchive::elector(),
            "/sync-elector",
            &["/sync-elector", "/usr/local/bin/syncctl"][..],
        ),
        (
            ImageArchive::examples(),
            "/election",
            &["/election", "/lock"][..],
        ),
    ] {
        let config = image.config();
        let config = &config["config"];
        assert_eq!(config["Entrypoint"], serde_json::json!([entrypoint]));
        let user = config["User"].as_str().expect("a USER");
        let passwd = String::from_utf8(image.file("/etc/passwd").expect("/etc/passwd")).unwrap();
        let uid = passwd
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.first() == Some(&user) || fields.get(2) == Some(&user))
                    .then(|| fields[2].to_owned())
            })
            .unwrap_or_else(|| panic!("USER {user} is in the image's /etc/passwd"));
        assert_eq!(uid, "65532", "USER {user} is the manifests' runAsUser");
        for path in paths {
            assert!(image.file(path).is_some(), "{path} in the image");
        }
    }
}

/// A real Prometheus on the host scraping the election example's electors on the node, at the
/// address their pods' prometheus.io annotations give: the leader it sees is the Lease's, and
/// every query of the dashboard returns data.
///
/// Debian's Prometheus is built without Kubernetes discovery, so this test reads the pods and
/// their annotations with kubectl and gives Prometheus the addresses, as
/// deploy/monitoring/src/prometheus-scrape.yaml's relabelling would.
#[test]
fn a_real_prometheus_scrapes_the_electors_at_their_annotated_addresses() {
    let cluster = Cluster::shared();
    let namespace = cluster.create_namespace("scrape");
    let kubeconfig = namespace_kubeconfig(cluster, &namespace);
    sh_ok(
        &kubeconfig,
        "kubectl apply -f deploy/rbac.yaml -f deploy/election.yaml -f deploy/leader-service.yaml",
    );
    wait_ready(cluster, &namespace, ELECTION, 3);

    let listed = cluster.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        &namespace,
        "-l",
        &format!("app.kubernetes.io/name={ELECTION}"),
        "-o",
        "json",
    ]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let targets: Vec<Target> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pod| {
            let annotations = &pod["metadata"]["annotations"];
            assert_eq!(annotations["prometheus.io/scrape"], "true", "{pod}");
            assert_eq!(annotations["prometheus.io/path"], "/metrics", "{pod}");
            let port = annotations["prometheus.io/port"].as_str().unwrap();
            let ip = pod["status"]["podIP"].as_str().unwrap();
            let name = pod["metadata"]["name"].as_str().unwrap();
            Target::pod(&format!("{ip}:{port}"), &namespace, name)
        })
        .collect();
    assert_eq!(targets.len(), 3);
    let monitoring = repository().join("deploy/monitoring/src");
    let rules = monitoring.join("sync-elector.rules.yaml");
    let prometheus = Prometheus::start("node", &targets, &[&rules]);
    let query = |expr: &str| prometheus.query(expr).unwrap_or_default();
    let up = eventually(Duration::from_secs(90), "three electors scraped", || {
        let up = query("up{job=\"sync-elector\"} == 1");
        (up.len() == 3).then_some(up)
    });
    eprintln!("scraped: {up:?}");

    let holder = cluster.kubectl_ok(&[
        "get",
        "lease",
        ELECTION,
        "-n",
        &namespace,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    let leader_pod = holder.split('/').next().unwrap().to_owned();
    let leading = format!(
        "max by (pod) (sync_elector_lock_held{{namespace=\"{namespace}\", lock=\"{ELECTION}\"}}) > 0"
    );
    eventually(
        Duration::from_secs(30),
        "the Lease's holder leading",
        || {
            let leaders = query(&leading);
            (leaders.len() == 1 && leaders[0]["metric"]["pod"] == leader_pod.as_str()).then_some(())
        },
    );

    let exprs: Vec<String> = sync_testkit::dashboard(
        &monitoring.join("sync-elector-dashboard.json"),
        &namespace,
        "30s",
    )
    .unwrap()
    .into_iter()
    .flat_map(|panel| panel.targets.into_iter().map(|(expr, _)| expr))
    .collect();
    eventually(
        Duration::from_secs(60),
        "every dashboard query answered",
        || {
            let empty: Vec<&String> = exprs.iter().filter(|e| query(e).is_empty()).collect();
            if !empty.is_empty() {
                eprintln!("no data yet: {empty:?}");
            }
            empty.is_empty().then_some(())
        },
    );
    cluster.kubectl_ok(&["delete", "namespace", &namespace, "--wait=false"]);
}
