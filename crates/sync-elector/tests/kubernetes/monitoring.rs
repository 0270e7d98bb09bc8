//! `deploy/monitoring/` with a real Prometheus (Debian's, which `scripts/install-test-deps`
//! installs) scraping real electors on a real kube-apiserver, on the host: promtool checks the
//! rules and runs their unit tests, every query of the Grafana dashboard returns data, and under
//! injected faults (the RoleBinding removed, the API server paused, a lock left with waiters and
//! no holder) the matching alert fires and then resolves.

#![cfg(feature = "kubernetes")]

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{ElectorProc, deploy_dir, eventually};
use sync_testkit::{ControlPlane, Prometheus, Target};

fn monitoring() -> PathBuf {
    deploy_dir().join("monitoring")
}

fn rules() -> PathBuf {
    monitoring().join("src/sync-elector.rules.yaml")
}

/// Runs `program args` and panics with its output unless it succeeds.
fn run_ok(program: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} does not run ({e}): run scripts/install-test-deps, which installs it")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?}:\n{text}");
    text
}

#[test]
fn promtool_checks_the_rules_and_passes_their_unit_tests_and_the_manifests_are_current() {
    let src = monitoring().join("src");
    let checked = run_ok(
        "promtool",
        &["check", "rules", "sync-elector.rules.yaml"],
        &src,
    );
    assert!(checked.contains("SUCCESS: 5 rules found"), "{checked}");
    let tested = run_ok(
        "promtool",
        &["test", "rules", "sync-elector.rules.test.yaml"],
        &src,
    );
    assert!(tested.contains("SUCCESS"), "{tested}");
    let root = deploy_dir().join("..");
    run_ok("scripts/monitoring-manifests", &["--check"], &root);
}

/// Electors `a` and `b` in a namespace of their own, and a Prometheus scraping both, labelled
/// with the namespace and the pod as a PodMonitor would, with the alert rules loaded.
struct Watched {
    namespace: String,
    kubeconfig: PathBuf,
    a: ElectorProc,
    b: ElectorProc,
    prometheus: Prometheus,
    /// Asks each elector's /readyz every second, as the kubelet's probe would, while true.
    probing: Arc<AtomicBool>,
}

impl Watched {
    fn start(plane: &ControlPlane, test: &str, ttl: u64) -> Self {
        let (namespace, kubeconfig) =
            support::namespace_with_deploy_rbac(plane, test, &["rbac.yaml"]);
        let a = support::kube_elector(&kubeconfig, &namespace, "a", ttl);
        let b = support::kube_elector(&kubeconfig, &namespace, "b", ttl);
        let prometheus = Prometheus::start(
            test,
            &[
                Target::pod(&a.url, &namespace, "a"),
                Target::pod(&b.url, &namespace, "b"),
            ],
            &[&rules()],
        );
        let probing = Arc::new(AtomicBool::new(true));
        for url in [a.url.clone(), b.url.clone()] {
            let probing = probing.clone();
            std::thread::spawn(move || {
                while probing.load(Ordering::Relaxed) {
                    let _ = sync_testkit::http::get(&format!("{url}/readyz"));
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        }
        eventually(Duration::from_secs(30), "both electors scraped", || {
            prometheus.targets_up().ok()?.then_some(())
        });
        Self {
            namespace,
            kubeconfig,
            a,
            b,
            prometheus,
            probing,
        }
    }

    /// Whether alert `name` is firing with label `key` = `value`.
    fn firing(&self, name: &str, key: &str, value: &str) -> bool {
        self.prometheus.alerts().unwrap().iter().any(|alert| {
            alert.name == name
                && alert.state == "firing"
                && alert.labels.get(key).map(String::as_str) == Some(value)
        })
    }

    /// Whether alert `name` is pending or firing at all.
    fn active(&self, name: &str) -> bool {
        self.prometheus
            .alerts()
            .unwrap()
            .iter()
            .any(|alert| alert.name == name)
    }

    fn wait_firing(&self, name: &str, key: &str, value: &str, within: Duration) {
        let started = Instant::now();
        eventually(within, &format!("{name} firing for {key}={value}"), || {
            self.firing(name, key, value).then_some(())
        });
        eprintln!("{name} fired after {:?}", started.elapsed());
    }

    fn wait_resolved(&self, name: &str, within: Duration) {
        let started = Instant::now();
        eventually(within, &format!("{name} resolved"), || {
            (!self.active(name)).then_some(())
        });
        eprintln!("{name} resolved after {:?}", started.elapsed());
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.probing.store(false, Ordering::Relaxed);
    }
}

/// The dashboard's queries, with its `$namespace` variable set to `namespace`.
fn dashboard_queries(namespace: &str) -> Vec<(String, String)> {
    let path = monitoring().join("src/sync-elector-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            queries.push((
                panel["title"].as_str().unwrap().to_owned(),
                expr.replace("$namespace", namespace),
            ));
        }
    }
    queries
}

#[test]
fn every_query_of_the_dashboard_returns_data_from_a_real_prometheus() {
    let plane = ControlPlane::shared();
    let watched = Watched::start(plane, "dashboard", 15);
    // A holder on a, a waiter on b that gets the lock when the holder releases it, and a lease
    // on b left to expire: a leader, a hand-over and a loss.
    let holder = support::releaser(&watched.a, "dashboard-lock", 3_000);
    holder.expect("acquired", Duration::from_secs(20));
    let waiter = support::holder(&watched.b, "dashboard-lock", 15);
    waiter.expect("acquired", Duration::from_secs(30));
    let expiring = format!("{}/v1/locks/dashboard-expiring/acquire", watched.b.url);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, grant) = runtime.block_on(support::call(
        &reqwest::Client::new(),
        "POST",
        &expiring,
        Some(r#"{"ttl_seconds": 1}"#),
    ));
    assert_eq!(status, 200, "{grant}");

    let queries = dashboard_queries(&watched.namespace);
    assert!(queries.len() >= 9, "{queries:?}");
    let mut empty = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        empty.clear();
        for (panel, expr) in &queries {
            match watched.prometheus.query(expr) {
                Ok(result) if !result.is_empty() => {}
                Ok(_) => empty.push(format!("{panel}: {expr} (no data)")),
                Err(err) => panic!("{panel}: {expr} fails: {err}"),
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        empty.is_empty(),
        "queries with no data after 60 s:\n{}",
        empty.join("\n")
    );
    // The leader panel names the pod that holds the lock now.
    let leaders = watched
        .prometheus
        .query(&format!(
            "max by (lock, pod) (sync_elector_lock_held{{namespace=\"{}\", lock=\"dashboard-lock\"}}) > 0",
            watched.namespace
        ))
        .unwrap();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    assert_eq!(leaders[0]["metric"]["pod"], "b", "{leaders:?}");
}

#[test]
fn alerts_fire_and_resolve_when_the_rolebinding_goes_and_the_api_server_pauses() {
    // A control plane of its own: this test pauses its API server.
    let plane = ControlPlane::start("alerts");
    let watched = Watched::start(&plane, "alerts", 6);

    // The RoleBinding removed: the store refuses the elector, and the alert fires after its 30 s;
    // restored, the alert resolves.
    plane.kubectl_ok(&[
        "delete",
        "rolebinding",
        "sync-elector",
        "-n",
        &watched.namespace,
    ]);
    // A write finds out at once; the permission checker then keeps asking.
    let try_acquire = format!("{}/v1/locks/rbac/acquire", watched.a.url);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(support::call(
        &reqwest::Client::new(),
        "POST",
        &try_acquire,
        Some(r#"{"wait_seconds": 0}"#),
    ));
    watched.wait_firing(
        "SyncElectorPermissionDenied",
        "pod",
        "a",
        Duration::from_secs(120),
    );
    let rbac = deploy_dir().join("rbac.yaml");
    plane.kubectl_ok(&[
        "apply",
        "-n",
        &watched.namespace,
        "-f",
        &rbac.display().to_string(),
    ]);
    watched.wait_resolved("SyncElectorPermissionDenied", Duration::from_secs(60));

    // The API server paused: a's renewals of the held lock fail, it loses the lock at the renew
    // deadline, and b's waiter cannot take it. Both alerts fire after their minute.
    let holder = support::holder(&watched.a, "paused", 6);
    holder.expect("acquired", Duration::from_secs(30));
    let waiter = support::holder(&watched.b, "paused", 6);
    eventually(Duration::from_secs(30), "b's waiter queued", || {
        watched
            .prometheus
            .query(&format!(
                "sync_elector_lock_waiters{{namespace=\"{}\", pod=\"b\", lock=\"paused\"}} == 1",
                watched.namespace
            ))
            .ok()?
            .first()
            .map(|_| ())
    });
    plane.pause_apiserver(true);
    let resumed = scopeguard(|| plane.pause_apiserver(false));
    watched.wait_firing(
        "SyncLockRenewalsFailing",
        "lock",
        "paused",
        Duration::from_secs(150),
    );
    watched.wait_firing(
        "SyncLockWaitersWithoutHolder",
        "lock",
        "paused",
        Duration::from_secs(150),
    );
    drop(resumed);
    // Back: a waiter takes the lock, and the renewals succeed again.
    waiter.expect("acquired", Duration::from_secs(60));
    watched.wait_resolved("SyncLockWaitersWithoutHolder", Duration::from_secs(60));
    // The renewal alert looks back 2 minutes: it resolves once no failure is in that window.
    watched.wait_resolved("SyncLockRenewalsFailing", Duration::from_secs(240));
    drop(holder);
    let _ = &watched.kubeconfig;
}

/// Runs `f` when dropped, so a failed assertion cannot leave the API server paused.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
