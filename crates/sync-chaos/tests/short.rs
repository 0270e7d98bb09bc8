//! The short chaos run CI makes: on each store, every fault kind once, with the whole history
//! checked (fencing, overlaps, told-in-time, recovery, liveness), for a lock, a semaphore of two
//! permits and a read-write lock. The harness exits non-zero when the checker finds anything;
//! this test also reads its report to check that each fault really ran and that the grants kept
//! changing hands.

use std::process::Command;

/// What the short runs contend for: `--primitive`'s values.
const PRIMITIVES: [&str; 3] = ["lock", "semaphore=2", "rwlock"];

fn short_runs(store: &str, kinds: &[&str]) {
    for primitive in PRIMITIVES {
        short_run(store, primitive, kinds);
    }
}

fn short_run(store: &str, primitive: &str, kinds: &[&str]) {
    let out = std::env::temp_dir().join(format!(
        "sync-chaos-{store}-{}-{}",
        primitive.replace('=', ""),
        std::process::id()
    ));
    let run = Command::new(env!("CARGO_BIN_EXE_sync-chaos"))
        .args([
            "--short",
            "--store",
            store,
            "--primitive",
            primitive,
            "--elector",
        ])
        .arg(sync_testkit::built_elector())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("the chaos harness runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("{stderr}\n{stdout}");
    assert!(
        run.status.success(),
        "the checker failed on {store} with a {primitive}: see above"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("chaos.json")).unwrap()).unwrap();
    let run = &report["stores"][0];
    let findings = &run["findings"];
    for kind in kinds {
        assert!(
            run["faults"][kind].as_u64().unwrap_or(0) >= 1,
            "{kind} was not injected: {}",
            run["faults"]
        );
    }
    assert_eq!(run["primitive"], primitive);
    for zero in [
        "foreign_grants",
        "fencing_violations",
        "duplicate_tokens",
        "token_order_violations",
        "overlap_writes_accepted_late",
    ] {
        assert_eq!(findings[zero], 0, "{zero}");
    }
    assert_eq!(findings["failures"].as_array().unwrap().len(), 0);
    // Half the sections hold for up to two ttls, so a minute holds a few dozen.
    assert!(findings["sections"]["released"].as_u64().unwrap() > 5);
    assert!(findings["writes_accepted"].as_u64().unwrap() > 20);
    // The liveness check saw real waits, and none went over its bound (a failure above).
    assert!(findings["waits"].as_u64().unwrap() > 5, "{findings}");
    // A semaphore's two permits and a read-write lock's readers were held side by side.
    if primitive != "lock" {
        assert!(findings["max_holders"].as_u64().unwrap() >= 2, "{findings}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

const EVERY_STORE: [&str; 4] = [
    "kill-holder",
    "pause-holder",
    "kill-elector",
    "pause-elector",
];

#[test]
fn memory_store_survives_every_fault_once() {
    short_runs("memory", &EVERY_STORE);
}

#[test]
fn kubernetes_store_survives_every_fault_once() {
    let mut kinds = EVERY_STORE.to_vec();
    kinds.extend(["api-errors", "api-latency", "api-partition", "watch-drop"]);
    short_runs("kubernetes", &kinds);
}

#[test]
fn kubernetes_store_on_a_real_kube_apiserver_survives_every_fault_once() {
    let mut kinds = EVERY_STORE.to_vec();
    kinds.extend(["apiserver-kill", "apiserver-pause", "apiserver-etcd-kill"]);
    short_runs("kube-apiserver", &kinds);
}

#[test]
fn etcd_store_survives_every_fault_once() {
    let mut kinds = EVERY_STORE.to_vec();
    kinds.extend(["etcd-leader-kill", "etcd-quorum-loss"]);
    if Command::new("ip")
        .args(["netns", "add", "sync-chaos-probe"])
        .status()
        .is_ok_and(|s| s.success())
    {
        let _ = Command::new("ip")
            .args(["netns", "del", "sync-chaos-probe"])
            .status();
        kinds.push("net-partition");
    } else {
        eprintln!("net-partition: skipped (creating network namespaces needs root and ip)");
    }
    short_runs("etcd", &kinds);
}
