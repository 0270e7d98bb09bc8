//! The harness works from a clean checkout: one short scenario on every store, against the
//! elector binary the workspace build left next to this test, writes a report with every row.

use std::process::Command;

#[test]
fn a_quick_acquire_run_measures_every_store_and_writes_its_report() {
    let out = std::env::temp_dir().join(format!("sync-bench-smoke-{}", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_sync-bench"))
        .args(["acquire", "--quick", "--elector"])
        .arg(sync_testkit::built_elector())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("the harness runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("acquire.json")).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    for system in [
        "loopback HTTP",
        "ours/memory",
        "ours/kubernetes",
        "ours/etcd",
    ] {
        let measured: Vec<_> = rows
            .iter()
            .filter(|r| r["system"] == system && r["n"].as_u64() > Some(0))
            .collect();
        assert!(!measured.is_empty(), "no figures for {system}: {rows:?}");
        assert!(
            measured
                .iter()
                .all(|r| r["median"].as_f64().is_some_and(|m| m > 0.0)),
            "{measured:?}"
        );
    }
    let markdown = String::from_utf8_lossy(&run.stdout);
    assert!(markdown.contains("| acquire | ours/etcd |"), "{markdown}");
    let _ = std::fs::remove_dir_all(out);
}
