//! `--publish`, the leader-only Service, on a real kube-apiserver (sync-testkit's `ControlPlane`,
//! a namespace per test): electors as processes, each with its own `POD_IP`, working with the
//! `sync-elector` ServiceAccount's token under `deploy/rbac.yaml` and `deploy/leader-service.yaml`.
//!
//! A watch records every version of the Lease and of the EndpointSlice. Both live in the
//! apiserver's one etcd, so their resourceVersions are one sequence, and the history is checked in
//! that order: the slice never lists two addresses, and never an address whose elector does not
//! hold the Lease at that point. No kube-proxy runs here, so traffic itself is not sent.

#![cfg(feature = "kubernetes")]

use crate::support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use support::{
    ClientProc, ElectorProc, eventually, holder, namespace_with_deploy_rbac, releaser, token,
};
use sync_testkit::ControlPlane;

const LOCK: &str = "leader";
const SERVICE: &str = "leader-svc";
const SLICE: &str = "leader-svc-leader";
const PORT: u16 = 8080;

/// The pod IP each elector identity publishes.
fn ip(identity: &str) -> String {
    match identity {
        "a" => "10.0.0.1".into(),
        "b" => "10.0.0.2".into(),
        other => panic!("no IP for {other}"),
    }
}

/// A namespace where electors publish: the deploy Roles, a kubeconfig with the ServiceAccount's
/// token, and a recorder of every Lease and slice version.
struct Publishing {
    plane: &'static ControlPlane,
    namespace: String,
    kubeconfig: PathBuf,
    history: History,
}

impl Publishing {
    fn new(test: &str, rbac: &[&str]) -> Self {
        let plane = ControlPlane::shared();
        let (namespace, kubeconfig) = namespace_with_deploy_rbac(plane, test, rbac);
        let history = History::record(plane.admin_kubeconfig(), &namespace);
        Self {
            plane,
            namespace,
            kubeconfig,
            history,
        }
    }

    /// An elector named `identity` publishing LOCK's holder to SERVICE, with ttl `ttl` seconds.
    fn elector(&self, identity: &str, ttl: u64) -> ElectorProc {
        let publish = format!("{LOCK}={SERVICE}:{PORT}");
        support::elector(
            identity,
            &[
                "--store",
                "kubernetes",
                "--namespace",
                &self.namespace,
                "--ttl",
                &format!("{ttl}s"),
                "--publish",
                &publish,
            ],
            &[
                ("KUBECONFIG", self.kubeconfig.display().to_string()),
                ("POD_IP", ip(identity)),
            ],
        )
    }

    /// Deletes deploy/rbac.yaml's RoleBinding: renewals of the Lease fail from now on, while the
    /// EndpointSlices' Role (leader-service.yaml) stays, so slice writes do not.
    fn take_the_leases_role_away(&self) {
        self.plane.kubectl_ok(&[
            "delete",
            "rolebinding",
            "sync-elector",
            "-n",
            &self.namespace,
        ]);
    }

    /// An elector named `identity` contending for LOCK without `--publish`.
    fn elector_without_publish(&self, identity: &str, ttl: u64) -> ElectorProc {
        support::kube_elector(&self.kubeconfig, &self.namespace, identity, ttl)
    }

    /// `kubectl get endpointslices -l kubernetes.io/service-name=SERVICE -o jsonpath=PATH`.
    fn kubectl_slices(&self, path: &str) -> String {
        self.plane.kubectl_ok(&[
            "get",
            "endpointslices",
            "-n",
            &self.namespace,
            "-l",
            &format!("kubernetes.io/service-name={SERVICE}"),
            "-o",
            &format!("jsonpath={path}"),
        ])
    }

    /// The addresses kubectl shows for SERVICE.
    fn kubectl_addresses(&self) -> Vec<String> {
        self.kubectl_slices("{range .items[*]}{range .endpoints[*]}{.addresses[0]}:{end}{end}")
            .split(':')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Waits until kubectl shows exactly `identity`'s address (and its port) for SERVICE.
    fn shows(&self, identity: &str) {
        let want = vec![ip(identity)];
        eventually(
            Duration::from_secs(20),
            &format!("kubectl showing {identity}'s address"),
            || (self.kubectl_addresses() == want).then_some(()),
        );
        let port = self.kubectl_slices(
            "{.items[0].ports[0].port} {.items[0].metadata.labels.endpointslice\\.kubernetes\\.io/managed-by}",
        );
        assert_eq!(port, format!("{PORT} sync-elector.metaparticle.io"));
    }

    /// Waits until the history has seen the slice listing `identity`, then checks all of it.
    fn check(&self, last: &str) -> Vec<Step> {
        eventually(Duration::from_secs(20), "the watch seeing it", || {
            self.history
                .steps()
                .last()
                .filter(|s| s.listed == [ip(last)])
                .map(|_| ())
        });
        let steps = self.history.steps();
        check_history(&steps);
        steps
    }
}

/// One version of the Lease or the slice, by resourceVersion.
#[derive(Debug, Clone)]
enum Version {
    Lease { holder: String },
    Slice { addresses: Vec<String> },
}

/// What held at one point of the merged history.
#[derive(Debug, Clone)]
struct Step {
    rv: u64,
    /// The Lease's holder identity ("" when released or absent).
    holder: String,
    /// The addresses the slice listed.
    listed: Vec<String>,
}

/// Every version of the Lease LOCK and of the slice SLICE, as two watches deliver them.
struct History {
    seen: Arc<Mutex<Vec<(u64, Version)>>>,
    _runtime: tokio::runtime::Runtime,
}

impl History {
    /// Lists, then watches from the list's version, so nothing after the start is missed.
    fn record(kubeconfig: &Path, namespace: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        runtime.block_on(async {
            let config = kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .unwrap();
            let client = kube::Client::try_from(config).unwrap();
            let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
            let slices: Api<EndpointSlice> = Api::namespaced(client, namespace);
            let from = leases.list(&ListParams::default()).await.unwrap();
            let from = from.metadata.resource_version.unwrap();
            // A deleted object holds nothing from its deletion's version on.
            let lease_version = |lease: Option<&Lease>| Version::Lease {
                holder: lease
                    .and_then(|l| l.spec.as_ref())
                    .and_then(|s| s.holder_identity.clone())
                    .unwrap_or_default(),
            };
            let slice_version = |slice: Option<&EndpointSlice>| Version::Slice {
                addresses: slice
                    .into_iter()
                    .flat_map(|s| &s.endpoints)
                    .flat_map(|e| e.addresses.clone())
                    .collect(),
            };
            tokio::spawn(watch(
                leases,
                LOCK,
                from.clone(),
                seen.clone(),
                lease_version,
            ));
            tokio::spawn(watch(slices, SLICE, from, seen.clone(), slice_version));
        });
        Self {
            seen,
            _runtime: runtime,
        }
    }

    /// The merged history, one step per version, in resourceVersion order.
    fn steps(&self) -> Vec<Step> {
        let mut seen = self.seen.lock().unwrap().clone();
        seen.sort_by_key(|(rv, _)| *rv);
        let (mut holder, mut listed) = (String::new(), Vec::new());
        seen.into_iter()
            .map(|(rv, version)| {
                match version {
                    Version::Lease { holder: h } => holder = h,
                    Version::Slice { addresses } => listed = addresses,
                }
                Step {
                    rv,
                    holder: holder.clone(),
                    listed: listed.clone(),
                }
            })
            .collect()
    }
}

/// Records every version of the object `name` (the Lease LOCK, the slice SERVICE-leader).
async fn watch<K>(
    api: Api<K>,
    name: &'static str,
    mut from: String,
    seen: Arc<Mutex<Vec<(u64, Version)>>>,
    version: impl Fn(Option<&K>) -> Version,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    loop {
        let mut stream = api
            .watch(&WatchParams::default(), &from)
            .await
            .unwrap()
            .boxed();
        while let Some(event) = stream.next().await {
            let (object, deleted) = match event.unwrap() {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => (o, false),
                WatchEvent::Deleted(o) => (o, true),
                WatchEvent::Bookmark(_) => continue,
                WatchEvent::Error(e) => panic!("the watch failed: {e:?}"),
            };
            let rv = object.meta().resource_version.clone().unwrap();
            if object.meta().name.as_deref() == Some(name) {
                let version = version((!deleted).then_some(&object));
                seen.lock().unwrap().push((rv.parse().unwrap(), version));
            }
            from = rv;
        }
    }
}

/// The slice never lists two addresses, nor an address whose elector does not hold the Lease.
fn check_history(steps: &[Step]) {
    let owner: HashMap<String, &str> = ["a", "b"].iter().map(|id| (ip(id), *id)).collect();
    for step in steps {
        assert!(
            step.listed.len() <= 1,
            "two addresses at rv {}: {steps:#?}",
            step.rv
        );
        if let Some(address) = step.listed.first() {
            let elector = owner[address];
            assert!(
                step.holder.starts_with(&format!("{elector}/")),
                "rv {} lists {address} ({elector}) while the Lease names {:?}: {steps:#?}",
                step.rv,
                step.holder
            );
        }
    }
}

/// How many versions of the slice listed `identity`'s address.
fn listed(steps: &[Step], identity: &str) -> usize {
    let mut last = None;
    steps
        .iter()
        .filter(|s| {
            let changed = last.as_ref() != Some(&s.listed);
            last = Some(s.listed.clone());
            changed && s.listed == [ip(identity)]
        })
        .count()
}

/// Whether some version lists nobody while the Lease still names `identity`: its address was
/// taken down (by itself, or by the next holder's fence) before anyone else held the lock.
fn emptied_under(steps: &[Step], identity: &str) -> bool {
    steps
        .iter()
        .any(|s| s.listed.is_empty() && s.holder.starts_with(&format!("{identity}/")))
}

/// `a` holds LOCK through a client of its own and is published; a client of `b` waits for it.
/// Elector `a` and a client of it that holds LOCK, with its address shown.
fn a_leads(p: &Publishing, ttl: u64) -> (ElectorProc, ClientProc) {
    let a = p.elector("a", ttl);
    let first = holder(&a, LOCK, ttl);
    first.expect("acquired", Duration::from_secs(20));
    p.shows("a");
    (a, first)
}

fn a_leads_and_b_waits(
    p: &Publishing,
    ttl: u64,
) -> (ElectorProc, ElectorProc, ClientProc, ClientProc) {
    let (a, b) = (p.elector("a", ttl), p.elector("b", ttl));
    let first = holder(&a, LOCK, ttl);
    first.expect("acquired", Duration::from_secs(20));
    p.shows("a");
    let waiter = holder(&b, LOCK, ttl);
    std::thread::sleep(Duration::from_millis(500));
    (a, b, first, waiter)
}

#[test]
fn on_release_the_slice_moves_to_the_next_holder() {
    let p = Publishing::new("publish-release", &["rbac.yaml", "leader-service.yaml"]);
    let (a, b) = (p.elector("a", 15), p.elector("b", 15));
    let first = releaser(&a, LOCK, 4000);
    let acquired = first.expect("acquired", Duration::from_secs(20));
    p.shows("a");
    let waiter = holder(&b, LOCK, 15);
    first.expect("released", Duration::from_secs(20));
    let released = std::time::Instant::now();
    let next = waiter.expect("acquired", Duration::from_secs(10));
    eprintln!(
        "hand-over with --publish (withdraw, release, fence, take): {:?} after release",
        released.elapsed()
    );
    assert!(token(&next) > token(&acquired));
    p.shows("b");
    let steps = p.check("b");
    assert_eq!(
        (listed(&steps, "a"), listed(&steps, "b")),
        (1, 1),
        "{steps:#?}"
    );
    assert!(
        emptied_under(&steps, "a"),
        "a withdrew before its release: {steps:#?}"
    );
}

#[test]
fn when_the_leaders_elector_is_killed_the_next_leader_rewrites_the_slice() {
    let p = Publishing::new("publish-kill", &["rbac.yaml", "leader-service.yaml"]);
    let (a, _b, _first, waiter) = a_leads_and_b_waits(&p, 4);
    a.signal("KILL");
    waiter.expect("acquired", Duration::from_secs(20));
    p.shows("b");
    let steps = p.check("b");
    // Nobody but b could take a's address down: b emptied the slice before its Lease write.
    assert_eq!(listed(&steps, "b"), 1, "{steps:#?}");
    assert!(emptied_under(&steps, "a"), "{steps:#?}");
}

#[test]
fn on_sigterm_the_leader_withdraws_and_the_next_one_publishes() {
    let p = Publishing::new("publish-term", &["rbac.yaml", "leader-service.yaml"]);
    let (mut a, _b, first, waiter) = a_leads_and_b_waits(&p, 15);
    a.signal("TERM");
    first.expect("lost", Duration::from_secs(10));
    waiter.expect("acquired", Duration::from_secs(10));
    assert!(
        a.wait_exit(Duration::from_secs(10))
            .expect("exits")
            .success()
    );
    p.shows("b");
    let steps = p.check("b");
    assert!(
        emptied_under(&steps, "a"),
        "a withdrew before its release: {steps:#?}"
    );
}

#[test]
fn a_paused_leaders_address_is_gone_before_the_next_leader_holds_and_stays_gone() {
    let ttl = 4;
    let p = Publishing::new("publish-pause", &["rbac.yaml", "leader-service.yaml"]);
    let (a, _b, _first, waiter) = a_leads_and_b_waits(&p, ttl);
    a.signal("STOP");
    waiter.expect("acquired", Duration::from_secs(20));
    p.shows("b");
    a.signal("CONT");
    // a wakes past its renew deadline: its renewals and any write it had begun must not bring
    // its address back.
    std::thread::sleep(Duration::from_secs(2 * ttl));
    p.shows("b");
    let steps = p.check("b");
    assert_eq!(listed(&steps, "a"), 1, "{steps:#?}");
    assert_eq!(listed(&steps, "b"), 1, "{steps:#?}");
}

#[test]
fn without_endpointslice_rights_the_lock_works_and_the_elector_says_what_to_grant() {
    let p = Publishing::new("publish-rbac", &["rbac.yaml"]);
    let (a, b) = (p.elector("a", 15), p.elector("b", 15));
    let first = releaser(&a, LOCK, 2000);
    first.expect("acquired", Duration::from_secs(20));
    let waiter = holder(&b, LOCK, 15);
    first.expect("released", Duration::from_secs(20));
    waiter.expect("acquired", Duration::from_secs(10));
    let said = eventually(Duration::from_secs(20), "the error in a's log", || {
        a.log()
            .into_iter()
            .find(|l| l.contains("403 Forbidden") && l.contains("endpointslices"))
    });
    eprintln!("{said}");
    for needed in [
        "get, create and update",
        "leader-service.yaml",
        &p.namespace,
    ] {
        assert!(said.contains(needed), "names {needed:?}: {said}");
    }
    // "403 Forbidden", not "403": the log's addresses hold random ports, such as 127.0.0.1:44037.
    let logged = a
        .log()
        .iter()
        .filter(|l| l.contains("403 Forbidden"))
        .count();
    assert_eq!(logged, 1, "logged once:\n{}", a.log().join("\n"));
    let dump = a.state_dump().expect("a state dump");
    assert!(
        dump.contains("published") && dump.contains("may not write the EndpointSlice"),
        "SIGUSR1's dump shows it: {dump}"
    );
    assert!(p.kubectl_addresses().is_empty());
}

#[test]
fn the_holder_puts_a_deleted_slice_back_and_a_restarted_elector_takes_its_old_address_down() {
    let ttl = 15;
    let p = Publishing::new("publish-repair", &["rbac.yaml", "leader-service.yaml"]);
    let (a, first) = a_leads(&p, ttl);
    p.plane
        .kubectl_ok(&["delete", "endpointslice", SLICE, "-n", &p.namespace]);
    // The holder reads its slice every 5 s and writes it again.
    p.shows("a");
    std::thread::sleep(Duration::from_secs(6));
    let published = |elector: &ElectorProc| {
        elector
            .log()
            .iter()
            .filter(|l| l.contains("published the holder's address"))
            .count()
    };
    assert_eq!(
        published(&a),
        2,
        "once at the grant, once after the deletion; a read that finds it right writes nothing:\n{}",
        a.log().join("\n")
    );
    check_history(&p.history.steps());

    // The elector dies holding; restarted with the same identity and IP it holds nothing, so it
    // takes its old address down at once instead of leaving it for up to a ttl.
    a.signal("KILL");
    drop(first);
    let _again = p.elector("a", ttl);
    eventually(Duration::from_secs(10), "the old address gone", || {
        p.kubectl_addresses().is_empty().then_some(())
    });
    check_history(&p.history.steps());
}

#[test]
fn a_leader_whose_renewals_fail_withdraws_before_its_renew_deadline() {
    let ttl = 9;
    let p = Publishing::new("publish-deadline", &["rbac.yaml", "leader-service.yaml"]);
    let (a, first) = a_leads(&p, ttl);
    p.take_the_leases_role_away();
    first.expect("lost", Duration::from_secs(30));
    eventually(Duration::from_secs(10), "the address gone", || {
        p.kubectl_addresses().is_empty().then_some(())
    });
    // The client counts its validity down itself, so it may say "lost" just before the elector,
    // and then release: the lease ends either as lost or as released, and its store release
    // (refused) is logged after either.
    let log = eventually(Duration::from_secs(10), "the lease's end", || {
        let log = a.log();
        log.iter()
            .any(|l| l.contains("release failed") && l.contains("lock=leader"))
            .then_some(log)
    });
    let ended = log
        .iter()
        .position(|l| {
            l.contains("lock=leader") && (l.contains("lease lost") || l.contains(" released "))
        })
        .unwrap_or_else(|| panic!("the lease's end in a's log:\n{}", log.join("\n")));
    let withdrew = log
        .iter()
        .position(|l| l.contains("withdrew this pod's address"))
        .unwrap_or_else(|| panic!("the withdraw in a's log:\n{}", log.join("\n")));
    assert!(
        withdrew < ended,
        "taken down before the renew deadline, not after:\n{}",
        log.join("\n")
    );
    check_history(&p.history.steps());
}

#[test]
fn a_leader_whose_renewals_recover_lists_its_address_again_without_waiting_for_a_resync() {
    // ttl 30 s: renewals every 10 s; the address goes when 5 s (ttl/6) are left before the renew
    // deadline (20 s after the last renewal), which leaves 5 s to mend the RBAC.
    let ttl = 30;
    let p = Publishing::new("publish-recover", &["rbac.yaml", "leader-service.yaml"]);
    let (a, first) = a_leads(&p, ttl);
    p.take_the_leases_role_away();
    eventually(Duration::from_secs(40), "the address gone", || {
        p.kubectl_addresses().is_empty().then_some(())
    });
    let rbac = support::deploy_dir().join("rbac.yaml");
    p.plane.kubectl_ok(&[
        "apply",
        "-n",
        &p.namespace,
        "-f",
        &rbac.display().to_string(),
    ]);
    eventually(Duration::from_secs(20), "the address back", || {
        (p.kubectl_addresses() == [ip("a")]).then_some(())
    });
    let log = eventually(Duration::from_secs(10), "the relisting in a's log", || {
        let log = a.log();
        let renewed = log
            .iter()
            .position(|l| l.contains("renewed again after failed renewals"))?;
        let published = log
            .iter()
            .skip(renewed)
            .position(|l| l.contains("published the holder's address"))?;
        Some((log.clone(), renewed, renewed + published))
    });
    let (log, renewed, published) = log;
    // Each log line starts with its RFC 3339 time.
    let at = |line: &str| {
        chrono::DateTime::parse_from_rfc3339(line.split_whitespace().next().unwrap_or_default())
            .unwrap_or_else(|e| panic!("no time at the start of {line:?}: {e}"))
    };
    let gap = (at(&log[published]) - at(&log[renewed])).num_milliseconds();
    println!("figure: renewal recovered -> address listed again: {gap} ms");
    // At once, not at the next resync (every 5 s): half a resync is a generous bound.
    assert!(
        gap < 2500,
        "relisted {gap} ms after the renewal:\n{}",
        log.join("\n")
    );
    let events = first.drain();
    assert!(
        !events.iter().any(|e| e.starts_with("lost")),
        "the holder kept its lock through the failed renewals: {events:?}"
    );
    check_history(&p.history.steps());
}

#[test]
fn an_elector_without_publish_fences_a_published_lock_and_says_it_should_publish() {
    let ttl = 4;
    let p = Publishing::new("publish-mixed", &["rbac.yaml", "leader-service.yaml"]);
    let (a, _first) = a_leads(&p, ttl);
    let c = p.elector_without_publish("c", ttl);
    let waiter = holder(&c, LOCK, ttl);
    std::thread::sleep(Duration::from_millis(500));
    // a dies holding: nobody withdraws its address but the next holder, which does not publish.
    a.signal("KILL");
    waiter.expect("acquired", Duration::from_secs(20));
    eventually(Duration::from_secs(10), "the watch seeing c hold", || {
        p.history
            .steps()
            .last()
            .filter(|s| s.holder.starts_with("c/"))
            .map(|_| ())
    });
    let steps = p.history.steps();
    // Never a's address while the Lease names c: c emptied the slice before its Lease write.
    check_history(&steps);
    assert!(emptied_under(&steps, "a"), "{steps:#?}");
    assert!(p.kubectl_addresses().is_empty());
    let said = eventually(Duration::from_secs(10), "the warning in c's log", || {
        c.log()
            .into_iter()
            .find(|l| l.contains("runs without --publish"))
    });
    assert!(
        said.contains(&format!("--publish {LOCK}={SERVICE}")),
        "names the flag to add: {said}"
    );
    // The Lease keeps naming the Service, so every later takeover fences it too.
    let annotation = p.plane.kubectl_ok(&[
        "get",
        "lease",
        LOCK,
        "-n",
        &p.namespace,
        "-o",
        "jsonpath={.metadata.annotations.sync\\.metaparticle\\.io/published-to}",
    ]);
    assert_eq!(annotation, SERVICE);
}
