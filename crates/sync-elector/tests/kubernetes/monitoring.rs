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

/// The dashboard's queries with their panels' titles, as sent for `namespace` (rates over 30 s:
/// 30 scrapes here).
fn dashboard_queries(namespace: &str) -> Vec<(String, String)> {
    sync_testkit::dashboard(&dashboard_file(), namespace, "30s")
        .unwrap()
        .into_iter()
        .flat_map(|panel| {
            let title = panel.title;
            panel
                .targets
                .into_iter()
                .map(move |(expr, _)| (title.clone(), expr))
        })
        .collect()
}

fn dashboard_file() -> PathBuf {
    monitoring().join("src/sync-elector-dashboard.json")
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
    // The leader panel names the pod that holds the lock now (b, since the hand-over), once a
    // scrape has seen it, and no other.
    let leader = format!(
        "max by (lock, pod) (sync_elector_lock_held{{namespace=\"{}\", lock=\"dashboard-lock\"}}) > 0",
        watched.namespace
    );
    let leaders = eventually(Duration::from_secs(20), "b alone leading", || {
        let leaders = watched.prometheus.query(&leader).ok()?;
        (leaders.len() == 1 && leaders[0]["metric"]["pod"] == "b").then_some(leaders)
    });
    eprintln!("leaders: {leaders:?}");
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

/// Not a check: three minutes of a lock changing hands every 30 s between two electors, a busy
/// mutex beside it and the API server paused for 20 s in the middle, then every dashboard query
/// over that window written as JSON to `$SYNC_DASHBOARD_DATA`, for `scripts/render-dashboard`
/// to draw docs/dashboard.png from.
#[test]
#[ignore = "draws the README's picture; scripts/render-dashboard runs it"]
fn record_the_dashboard() {
    let out = std::env::var("SYNC_DASHBOARD_DATA").expect("SYNC_DASHBOARD_DATA names the output");
    let plane = ControlPlane::start("picture");
    let watched = Watched::start(&plane, "picture", 15);
    let started = now_seconds();
    let electors = [&watched.a, &watched.b];
    let busy: Vec<_> = electors
        .iter()
        .map(|e| {
            support::ClientProc::spawn("churn", &e.url, &[("SYNC_TEST_LOCK", "jobs".to_owned())])
        })
        .collect();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_secs(95));
            plane.pause_apiserver(true);
            std::thread::sleep(Duration::from_secs(20));
            plane.pause_apiserver(false);
        });
        // Each holder retries through store errors; killing its process closes its lease's
        // event stream, which releases the lock to the next one, already waiting.
        let mut current = support::holder(electors[0], "election", 15);
        current.expect("acquired", Duration::from_secs(30));
        for i in 1..6 {
            let next = support::holder(electors[i % 2], "election", 15);
            std::thread::sleep(Duration::from_secs(30));
            drop(current);
            next.expect("acquired", Duration::from_secs(90));
            current = next;
        }
        drop(current);
    });
    drop(busy);
    let ended = now_seconds();
    // Rates over 20 s, as Grafana would choose for a window of a few minutes.
    let mut panels = Vec::new();
    for panel in sync_testkit::dashboard(&dashboard_file(), &watched.namespace, "20s").unwrap() {
        let mut targets = Vec::new();
        for (expr, legend) in panel.targets {
            let result = watched
                .prometheus
                .query_range(&expr, started, ended, 2.0)
                .unwrap();
            targets.push(serde_json::json!({
                "expr": expr,
                "legend": legend,
                "result": result,
            }));
        }
        panels.push(serde_json::json!({
            "title": panel.title,
            "unit": panel.unit,
            "targets": targets,
        }));
    }
    let data = serde_json::json!({ "start": started, "end": ended, "step": 2.0, "panels": panels });
    std::fs::write(&out, serde_json::to_string(&data).unwrap()).unwrap();
    eprintln!("wrote {out}");
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
