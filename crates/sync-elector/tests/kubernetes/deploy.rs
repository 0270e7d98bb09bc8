//! `deploy/` and the README on a real kube-apiserver (sync-testkit's `ControlPlane`, shared by
//! this binary, a namespace per test): `kubectl apply -f deploy/` with the server's full
//! validation; electors that run with nothing but the deploy ServiceAccount's token and do all
//! their work under its Role; what happens without the RoleBinding; the leadership Events; and the
//! README's kubectl commands.

#![cfg(feature = "kubernetes")]

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::scenarios::release_hands_over;
use support::{ElectorProc, call, deploy_dir, eventually};
use sync_testkit::ControlPlane;

/// A namespace with `deploy/rbac.yaml` applied, and a kubeconfig holding only its
/// ServiceAccount's token.
fn namespace_with_deploy_rbac(plane: &ControlPlane, test: &str) -> (String, PathBuf) {
    support::namespace_with_deploy_rbac(plane, test, &["rbac.yaml"])
}

/// One HTTP call from blocking test code.
fn http(method: &str, url: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(call(&reqwest::Client::new(), method, url, body))
}

#[test]
fn kubectl_apply_of_deploy_passes_the_servers_full_validation() {
    let plane = ControlPlane::shared();
    let namespace = plane.create_namespace("deploy");
    let dir = deploy_dir().display().to_string();
    // Strict server-side field validation: an unknown or misplaced field fails the apply.
    let out = plane.kubectl_ok(&["apply", "--validate=strict", "-n", &namespace, "-f", &dir]);
    eprintln!("{out}");
    let deployments = plane.kubectl_ok(&["get", "deployments", "-n", &namespace, "-o", "json"]);
    let deployments: serde_json::Value = serde_json::from_str(&deployments).unwrap();
    let items = deployments["items"].as_array().unwrap();
    assert!(items.len() >= 2, "the lock and election examples: {out}");
    for deployment in items {
        // The elector is a native sidecar: an init container that keeps running.
        let init = &deployment["spec"]["template"]["spec"]["initContainers"];
        assert!(
            init.as_array().is_some_and(|c| c
                .iter()
                .any(|c| c["name"] == "sync-elector" && c["restartPolicy"] == "Always")),
            "the server kept the native sidecar: {init}"
        );
    }
    for kind in ["serviceaccount", "role", "rolebinding"] {
        plane.kubectl_ok(&["get", kind, "sync-elector", "-n", &namespace]);
    }
}

#[test]
fn electors_do_all_their_work_with_the_deploy_service_accounts_token_alone() {
    let plane = ControlPlane::shared();
    let (namespace, kubeconfig) = namespace_with_deploy_rbac(plane, "sa");
    let start =
        |identity: &str, ttl: u64| support::kube_elector(&kubeconfig, &namespace, identity, ttl);
    // Acquire, wait by the watch, release, hand over, renew: every verb of the Role.
    release_hands_over(&start, "handover");

    // Each change of holder was recorded as an Event on the Lease, as client-go records it.
    let events = eventually(Duration::from_secs(20), "the leadership Events", || {
        let out = plane.kubectl_ok(&[
            "get",
            "events",
            "-n",
            &namespace,
            "--field-selector",
            "involvedObject.kind=Lease,involvedObject.name=handover",
            "-o",
            "json",
        ]);
        let events: serde_json::Value = serde_json::from_str(&out).unwrap();
        let messages: Vec<String> = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["reason"] == "LeaderElection" && e["source"]["component"] == "sync-elector"
            })
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect();
        let became = messages
            .iter()
            .filter(|m| m.ends_with(" became leader"))
            .count();
        let stopped = messages
            .iter()
            .filter(|m| m.ends_with(" stopped leading"))
            .count();
        (became >= 2 && stopped >= 1).then_some(messages)
    });
    assert!(
        events.iter().any(|m| m.starts_with("a/")) && events.iter().any(|m| m.starts_with("b/")),
        "{events:?}"
    );
    let described = plane.kubectl_ok(&["describe", "lease", "handover", "-n", &namespace]);
    assert!(
        described.contains("LeaderElection") && described.contains("became leader"),
        "kubectl describe lease shows the Events:\n{described}"
    );
}

#[test]
fn without_its_rolebinding_the_elector_is_unready_says_what_is_missing_and_recovers() {
    let plane = ControlPlane::shared();
    let (namespace, kubeconfig) = namespace_with_deploy_rbac(plane, "unbound");
    let elector = support::kube_elector(&kubeconfig, &namespace, "a", 6);
    let ready = |elector: &ElectorProc| http("GET", &format!("{}/readyz", elector.url), None);
    eventually(Duration::from_secs(30), "ready", || {
        (ready(&elector).0 == 200).then_some(())
    });
    let acquire = format!("{}/v1/locks/rbac/acquire", elector.url);
    let try_once = || http("POST", &acquire, Some(r#"{"wait_seconds":0}"#));
    let (status, lease) = try_once();
    assert_eq!(status, 200, "{lease}");
    let id = lease["lease_id"].as_str().expect("a lease id").to_owned();
    let (status, _) = http("DELETE", &format!("{}/v1/leases/{id}", elector.url), None);
    assert_eq!(status, 204);
    // A holder renewing every 2 s (ttl 6 s) while the binding goes away.
    let holder = support::holder(&elector, "held", 6);
    holder.expect("acquired", Duration::from_secs(20));

    plane.kubectl_ok(&["delete", "rolebinding", "sync-elector", "-n", &namespace]);
    // Its renewals are refused: it is told at the renew deadline.
    holder.expect("lost", Duration::from_secs(20));
    // The API's authorizer takes the removal within moments; the next write is refused.
    let (status, error) = eventually(Duration::from_secs(30), "a refused acquire", || {
        let answer = try_once();
        (answer.0 != 200).then_some(answer)
    });
    assert_eq!(status, 503, "{error}");
    let message = error["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("leases") && message.contains(&namespace),
        "the acquire's error names the resource and the namespace: {message}"
    );
    assert!(
        message.contains("update") || message.contains("may not"),
        "and the verb: {message}"
    );

    // The held lease ends (as lost, or released by its client, which counts its validity down
    // itself) and its refused store release is logged, before the log is counted below.
    eventually(
        Duration::from_secs(20),
        "the held lease's release refused",
        || {
            elector
                .log()
                .iter()
                .any(|l| l.contains("release failed") && l.contains("lock=held"))
                .then_some(())
        },
    );

    // /readyz says not ready, naming every missing verb once the elector has asked the API.
    let missing = eventually(Duration::from_secs(20), "readyz naming the verbs", || {
        let (status, body) = ready(&elector);
        let message = body["message"].as_str().unwrap_or_default().to_owned();
        (status == 503 && message.contains("may not get leases.coordination.k8s.io, list"))
            .then_some(message)
    });
    eprintln!("readyz: {missing}");
    assert!(
        missing.contains(&format!("namespace {namespace:?}")),
        "{missing}"
    );
    assert!(missing.contains("deploy/rbac.yaml"), "{missing}");
    // /metrics says so too, with the refused requests and the failed renewals counted.
    let metrics = || {
        sync_testkit::http::get(&format!("{}/metrics", elector.url))
            .unwrap()
            .1
    };
    let text = metrics();
    assert!(
        text.lines()
            .any(|l| l == "sync_elector_store_permission_denied 1")
            && text.lines().any(|l| l == "sync_elector_ready 0"),
        "{text}"
    );
    let counted = |text: &str, prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        counted(
            &text,
            "sync_elector_store_requests_total{store=\"kubernetes\",resource=\"leases\",verb=\"update\",result=\"forbidden\"}"
        ) >= 1.0,
        "{text}"
    );
    assert!(
        counted(
            &text,
            "sync_elector_lock_renewal_failures_total{lock=\"held\"}"
        ) >= 1.0,
        "{text}"
    );

    // Retries do not repeat the log line: it changes only when what is missing changes.
    let logged = |elector: &ElectorProc| {
        elector
            .log()
            .iter()
            .filter(|l| l.contains("may not") || l.contains("cannot update"))
            .count()
    };
    assert_eq!(try_once().0, 503);
    let before = logged(&elector);
    for _ in 0..10 {
        assert_eq!(try_once().0, 503);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        logged(&elector),
        before,
        "ten more refused acquires and a few re-checks logged nothing new:\n{}",
        elector.log().join("\n")
    );
    assert!(before >= 1, "the missing permission was logged");

    // Restoring the binding recovers without a restart.
    let rbac = deploy_dir().join("rbac.yaml");
    plane.kubectl_ok(&["apply", "-n", &namespace, "-f", &rbac.display().to_string()]);
    eventually(Duration::from_secs(30), "ready again", || {
        (ready(&elector).0 == 200).then_some(())
    });
    let (status, lease) = try_once();
    assert_eq!(status, 200, "acquires work again: {lease}");
    let text = metrics();
    assert!(
        text.lines()
            .any(|l| l == "sync_elector_store_permission_denied 0")
            && text.lines().any(|l| l == "sync_elector_ready 1"),
        "{text}"
    );
}

#[test]
fn the_readmes_kubectl_commands_print_what_the_readme_says() {
    let plane = ControlPlane::shared();
    // The README's commands name no namespace: they run in the kubeconfig's, `default`.
    let elector = support::kube_elector(plane.admin_kubeconfig(), "default", "pod-a", 15);
    let holder = support::holder(&elector, "election-example", 15);
    holder.expect("acquired", Duration::from_secs(20));

    let env_kubectl = |command: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("KUBECONFIG", plane.admin_kubeconfig())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // `kubectl get lease election-example -o yaml` shows the record docs/kubernetes.md describes.
    let yaml = env_kubectl("kubectl get lease election-example -o yaml");
    let lease: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    let spec = &lease["spec"];
    assert!(
        spec["holderIdentity"]
            .as_str()
            .is_some_and(|h| h.starts_with("pod-a/")),
        "{yaml}"
    );
    assert_eq!(spec["leaseDurationSeconds"].as_u64(), Some(15), "{yaml}");
    assert!(spec["leaseTransitions"].as_u64().is_some(), "{yaml}");
    assert!(
        spec["acquireTime"].is_string() && spec["renewTime"].is_string(),
        "{yaml}"
    );
    assert_eq!(
        lease["metadata"]["labels"]["app.kubernetes.io/managed-by"].as_str(),
        Some("sync-elector")
    );

    // The README's jsonpath command, taken from the README itself, prints the holder's pod name.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let line = readme
        .lines()
        .find(|l| l.contains("jsonpath='{.spec.holderIdentity}'"))
        .expect("the README shows the jsonpath command");
    let inner = line
        .split("\"$(")
        .nth(1)
        .and_then(|rest| rest.rsplit_once(")\""))
        .map(|(command, _)| command)
        .expect("the command inside $( )");
    let printed = env_kubectl(inner);
    assert_eq!(printed.trim(), "pod-a", "{inner} printed {printed:?}");
}
