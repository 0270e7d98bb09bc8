//! Schemathesis (from PyPI) against the elector binary, driven by the OpenAPI document the elector
//! serves at `/openapi.json`: examples, boundary values and random inputs for every v1 operation,
//! with every check it has (no 5xx, every status and content type documented, every body matching
//! its schema, valid input accepted, invalid input refused). The stateful phase follows the
//! grant's links: acquire, then renew and release with the lease id it returned. `scripts/install-test-deps` installs
//! it; `tests/schemathesis/hooks.py` says the one thing it changes in the generated requests, and
//! `tests/schemathesis/schemathesis.toml` the one status it adds to a check's defaults.
//!
//! The two event streams (`watch`, `events`) are left out: they never end by design, so each
//! request would hang the run. `tests/elector/fuzz.rs` sends them random and malformed paths.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::StoreKind;

/// The pinned schemathesis, where `scripts/install-test-deps` puts it (or `SYNC_SCHEMATHESIS`).
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("SYNC_SCHEMATHESIS") {
        return path.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME is set");
    let path = cache.join("sync-rs/schemathesis-4.32.5/bin/schemathesis");
    assert!(
        path.exists(),
        "schemathesis is not installed at {}: run scripts/install-test-deps (or scripts/test), \
         or set SYNC_SCHEMATHESIS to a schemathesis 4 binary",
        path.display()
    );
    path
}

support::on_every_store!(schemathesis_finds_nothing);

fn schemathesis_finds_nothing(kind: StoreKind) {
    let binary = schemathesis();
    let on = support::OnStore::start(kind, "schemathesis-elector", 2, &[]);
    let elector = &on.elector;
    let seed = std::env::var("SYNC_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let reports = support::temp_dir(&format!("schemathesis-{}", kind.name()));
    let run = Command::new(&binary)
        .current_dir(&reports)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env(
            "PYTHONPATH",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis"),
        )
        .arg("--config-file")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/schemathesis.toml"))
        .args(["run", &format!("{}/openapi.json", elector.url)])
        .args([
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
        ])
        .args(["--max-examples", "100", "--request-timeout", "5"])
        .args(["--exclude-path-regex", "/(watch|events)$"])
        .args(["--seed", &seed])
        .output()
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        run.status.success(),
        "schemathesis found problems on {} (above); reproduce with SYNC_SCHEMATHESIS_SEED={seed}",
        kind.name()
    );
    assert!(stdout.contains("passed"), "schemathesis ran no cases");
    let (status, _) = sync_testkit::http::get(&format!("{}/healthz", elector.url)).unwrap();
    assert_eq!(status, 200, "the elector stopped serving");
}
