//! Several electors as separate processes, each with its own identity and kubeconfig, sharing
//! one Kubernetes API: a real kube-apiserver (sync-testkit's `ControlPlane`, a namespace per
//! test), the Kubernetes API test server, with faults injected; and the same fault-free scenarios
//! against another real cluster when `SYNC_TEST_KUBECONFIG` names one.

#![cfg(feature = "kubernetes")]

use crate::support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube_test_server::TestServer;
use support::scenarios::{contest, failover_after_an_elector_is_killed, release_hands_over};
use support::{ElectorProc, contend_and_check, temp_dir, token};

/// Where the electors find their Kubernetes API.
enum Cluster {
    /// The test server, on a runtime thread of its own so tests may block.
    TestServer {
        server: TestServer,
        _runtime: tokio::runtime::Runtime,
        dir: sync_testkit::TempDir,
    },
    /// A real cluster, through a kubeconfig, in `namespace` (else the kubeconfig's).
    Real {
        kubeconfig: PathBuf,
        namespace: Option<String>,
    },
}

impl Cluster {
    fn test_server(test: &str) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let server = runtime.block_on(TestServer::start()).unwrap();
        Cluster::TestServer {
            server,
            _runtime: runtime,
            dir: temp_dir(test),
        }
    }

    /// The real kube-apiserver this test binary shares, in a namespace of this test's own.
    fn kube_apiserver(test: &str) -> Self {
        let plane = sync_testkit::ControlPlane::shared();
        Cluster::Real {
            kubeconfig: plane.admin_kubeconfig().to_owned(),
            namespace: Some(plane.create_namespace(test)),
        }
    }

    fn server(&self) -> &TestServer {
        match self {
            Cluster::TestServer { server, .. } => server,
            Cluster::Real { .. } => panic!("fault injection needs the test server"),
        }
    }

    /// How the shared scenarios start an elector on this cluster.
    fn start(&self) -> impl Fn(&str, u64) -> ElectorProc + '_ {
        |identity, ttl| self.elector(identity, ttl)
    }

    /// An elector named `identity` with `ttl`, on this cluster.
    fn elector(&self, identity: &str, ttl: u64) -> ElectorProc {
        let ttl = format!("{ttl}s");
        let mut args = vec!["--store", "kubernetes", "--ttl", &ttl];
        let kubeconfig = match self {
            Cluster::TestServer { server, dir, .. } => {
                server.write_kubeconfig(dir, identity).unwrap()
            }
            Cluster::Real {
                kubeconfig,
                namespace,
            } => {
                if let Some(namespace) = namespace {
                    args.extend(["--namespace", namespace]);
                }
                kubeconfig.clone()
            }
        };
        support::elector(
            identity,
            &args,
            &[("KUBECONFIG", kubeconfig.display().to_string())],
        )
    }
}

/// A lock name no earlier run used (a real cluster keeps its Leases).
fn lock_name(scenario: &str) -> String {
    let unique = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    format!("{scenario}-{unique}")
}

/// The holder of `lock` as the test server stores it.
fn holder_identity(cluster: &Cluster, lock: &str) -> String {
    let lease = cluster.server().lease("default", lock).unwrap();
    lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn mutual_exclusion_with_increasing_tokens(cluster: &Cluster) {
    let electors: Vec<_> = (0..3)
        .map(|i| cluster.elector(&format!("e{i}"), 5))
        .collect();
    let lock = lock_name("exclusive");
    contend_and_check(&electors, &lock, 6, 4);
}

fn sigterm_hands_over_at_once(cluster: &Cluster) {
    let mut c = contest(&cluster.start(), &lock_name("rolling"), 15);
    c.a.signal("TERM");
    let term = Instant::now();
    c.first.expect("lost", Duration::from_secs(10));
    c.waiter.expect("acquired", Duration::from_secs(10));
    eprintln!("SIGTERM: lock moved after {:?}", term.elapsed());
    assert!(
        term.elapsed() < Duration::from_secs(5),
        "at once, not after the 15 s ttl"
    );
    assert!(
        c.a.wait_exit(Duration::from_secs(10))
            .expect("exits")
            .success()
    );
}

/// Declares `scenario` as two tests, `NAME::kube_apiserver` and `NAME::test_server`, each on a
/// cluster of its own (a namespace named from `prefix` on the real server).
macro_rules! on_both_servers {
    ($name:ident, $prefix:literal, $scenario:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn kube_apiserver() {
                ($scenario)(&Cluster::kube_apiserver($prefix));
            }

            #[test]
            fn test_server() {
                ($scenario)(&Cluster::test_server(concat!("k8s-", $prefix)));
            }
        }
    };
}

on_both_servers!(
    mutual_exclusion_with_strictly_increasing_tokens,
    "exclusive",
    mutual_exclusion_with_increasing_tokens
);
on_both_servers!(
    release_hands_over_to_another_elector,
    "handover",
    |cluster: &Cluster| release_hands_over(&cluster.start(), &lock_name("handover"))
);
on_both_servers!(
    a_killed_electors_lock_moves_after_about_a_ttl,
    "failover",
    |cluster: &Cluster| failover_after_an_elector_is_killed(
        &cluster.start(),
        &lock_name("failover"),
        4
    )
);
on_both_servers!(
    sigterm_hands_the_lock_over_at_once,
    "sigterm",
    sigterm_hands_over_at_once
);

#[test]
fn during_an_api_outage_the_holder_is_told_and_nobody_else_acquires() {
    let ttl = 3;
    let cluster = Cluster::test_server("k8s-outage");
    let c = contest(&cluster.start(), "outage", ttl);
    cluster.server().set_failing(Some(503));
    let outage = Instant::now();
    c.first.expect("lost", Duration::from_secs(ttl + 5));
    let told = outage.elapsed();
    eprintln!(
        "API outage: holder told lost after {told:?} (renew deadline {}s)",
        ttl * 2 / 3
    );
    assert!(
        told < Duration::from_secs(ttl),
        "by the renew deadline, before the ttl: {told:?}"
    );
    assert!(
        c.waiter
            .next("acquired", Duration::from_secs(2 * ttl))
            .is_none(),
        "nobody acquires while the API is down"
    );
    cluster.server().set_failing(None);
    let next = c.waiter.expect("acquired", Duration::from_secs(ttl + 15));
    assert!(token(&next) > c.first_token);
    assert!(holder_identity(&cluster, "outage").starts_with("b/"));
}

#[test]
fn after_a_partition_heals_there_is_exactly_one_holder() {
    let ttl = 3;
    let cluster = Cluster::test_server("k8s-partition");
    let c = contest(&cluster.start(), "partition", ttl);
    cluster.server().set_partitioned("a", true);
    let cut = Instant::now();
    c.first.expect("lost", Duration::from_secs(ttl + 5));
    let lost_at = cut.elapsed();
    c.waiter.expect("acquired", Duration::from_secs(ttl + 10));
    let moved = cut.elapsed();
    eprintln!("partition: holder told lost after {lost_at:?}, lock moved after {moved:?}");
    assert!(
        lost_at < moved,
        "the cut-off holder was told before the other took over"
    );
    cluster.server().set_partitioned("a", false);
    std::thread::sleep(Duration::from_secs(2 * ttl));
    assert!(holder_identity(&cluster, "partition").starts_with("b/"));
    // Both electors, each from its own view, agree on the one holder.
    for elector in [&c.a, &c.b] {
        let state = reqwest::blocking_get(&format!("{}/v1/locks/partition", elector.url));
        assert!(
            state["holder"].as_str().unwrap().starts_with("b/"),
            "{state}"
        );
    }
}

#[test]
fn an_idle_waiter_sends_nothing_and_a_holder_one_write_per_renewal() {
    let ttl = 3;
    let cluster = Cluster::test_server("k8s-load");
    let _c = contest(&cluster.start(), "load", ttl);
    std::thread::sleep(Duration::from_millis(500));
    let server = cluster.server();
    let (a0, b0) = (server.counts("a"), server.counts("b"));
    let window = Duration::from_secs(9);
    std::thread::sleep(window);
    let (a1, b1) = (server.counts("a"), server.counts("b"));
    eprintln!(
        "in {window:?}: holder's elector {a0:?} -> {a1:?}; waiter's elector {b0:?} -> {b1:?}"
    );
    assert_eq!(
        b1.requests(),
        b0.requests(),
        "the waiting elector sent nothing but its watch"
    );
    assert_eq!(b1.watch, b0.watch, "and kept one watch open");
    let writes = a1.writes() - a0.writes();
    let expected = window.as_secs() / (ttl / 3).max(1);
    assert!(
        writes + 2 >= expected && writes <= expected + 2,
        "one write per ttl/3: {writes} writes in {window:?}, expected about {expected}"
    );
    assert_eq!(
        a1.requests() - a0.requests(),
        writes,
        "no reads besides the watch"
    );
}

#[test]
#[ignore = "needs a real cluster: set SYNC_TEST_KUBECONFIG to its kubeconfig and run with --ignored"]
fn real_cluster_scenarios() {
    let kubeconfig = std::env::var("SYNC_TEST_KUBECONFIG")
        .expect("SYNC_TEST_KUBECONFIG must name the kubeconfig of the cluster to test against");
    let cluster = Cluster::Real {
        kubeconfig: PathBuf::from(kubeconfig),
        namespace: None,
    };
    mutual_exclusion_with_increasing_tokens(&cluster);
    release_hands_over(&cluster.start(), &lock_name("handover"));
    failover_after_an_elector_is_killed(&cluster.start(), &lock_name("failover"), 4);
    sigterm_hands_over_at_once(&cluster);
}

mod reqwest {
    /// A GET of JSON from blocking test code, on a short-lived runtime.
    pub fn blocking_get(url: &str) -> serde_json::Value {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async { ::reqwest::get(url).await.unwrap().json().await.unwrap() })
    }
}
