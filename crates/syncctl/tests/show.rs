//! `syncctl locks`, `get` and `watch` against a real elector, while `syncctl run` holds locks.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

use sync_testkit::{ElectorProc, Proc, built_elector};

fn syncctl(elector: &ElectorProc, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_syncctl"));
    command.env("SYNC_ELECTOR_URL", &elector.url).args(args);
    command
}

/// Runs `syncctl ARGS` and returns its status and standard output.
fn stdout(elector: &ElectorProc, args: &[&str]) -> (i32, String) {
    let out = syncctl(elector, args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn locks_and_get_show_the_holder_in_every_format() {
    let elector = ElectorProc::spawn(&built_elector(), "show", &[], &[]);
    // A holder that stays until killed: the command waits on its own stdin.
    let holder = syncctl(
        &elector,
        &["run", "held", "--", "sh", "-c", "echo ready; read line"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let holder = Proc::new(holder);
    let (code, table) = stdout(&elector, &["locks"]);
    assert_eq!(code, 0);
    // The run may not have its lock yet: ask until it shows.
    let mut table = table;
    for _ in 0..100 {
        if table.contains("show/") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        table = stdout(&elector, &["locks"]).1;
    }
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("HOLDER"),
        "{table}"
    );
    let row = lines
        .iter()
        .find(|l| l.starts_with("held "))
        .expect("a row for held");
    assert_eq!(
        row.find("show/"),
        lines[0].find("HOLDER"),
        "the columns line up:\n{table}"
    );

    let (_, json) = stdout(&elector, &["locks", "-o", "json"]);
    let locks: serde_json::Value = serde_json::from_str(&json).unwrap();
    let held = locks
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "held")
        .unwrap();
    assert!(held["holder"].as_str().unwrap().starts_with("show/"));
    assert!(held["token"].as_u64().unwrap() > 0);

    assert!(held["held_for_ms"].is_u64(), "{held}");

    // A waiter behind the holder is counted, and held-for shows in the table.
    let waiter = Proc::new(
        syncctl(&elector, &["run", "held", "--", "true"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut state = serde_json::Value::Null;
    for _ in 0..100 {
        state = serde_json::from_str(&stdout(&elector, &["get", "held", "-o", "json"]).1).unwrap();
        if state["waiters"] == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state["waiters"], 1, "{state}");
    let table = stdout(&elector, &["get", "held"]).1;
    assert!(
        table.contains("HELD FOR") && table.contains("WAITERS"),
        "{table}"
    );
    drop(waiter);

    let (_, yaml) = stdout(&elector, &["get", "held", "-o", "yaml"]);
    assert!(
        yaml.contains("name: held") && yaml.contains("holder: show/"),
        "{yaml}"
    );

    // A lock never held is free, token 0; a bad name or format is refused with status 2.
    let (code, never) = stdout(&elector, &["get", "never", "-o", "json"]);
    assert_eq!(code, 0);
    let never: serde_json::Value = serde_json::from_str(&never).unwrap();
    assert_eq!(
        (never["holder"].clone(), never["token"].clone()),
        (serde_json::Value::Null, 0.into())
    );
    assert_eq!(stdout(&elector, &["get", "Nope"]).0, 2);
    assert_eq!(stdout(&elector, &["locks", "-o", "xml"]).0, 2);
    holder.signal("TERM");
}

#[test]
fn watch_sees_each_hand_over() {
    let elector = ElectorProc::spawn(&built_elector(), "watch", &[], &[]);
    let mut watch = syncctl(&elector, &["watch", "turns", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (send, lines) = channel();
    let out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    let watch = Proc::new(watch);
    let next = || -> serde_json::Value {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("watch printed a line");
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(
        next()["holder"],
        serde_json::Value::Null,
        "the state now: free"
    );
    // Three runs in turn: each hand-over shows as a holder, then free again.
    let mut holders = Vec::new();
    for _ in 0..3 {
        let status = syncctl(&elector, &["run", "turns", "--", "sleep", "0.2"])
            .status()
            .unwrap();
        assert!(status.success());
        let held = next();
        let freed = next();
        holders.push(held["holder"].as_str().unwrap().to_owned());
        assert_eq!(freed["holder"], serde_json::Value::Null);
        assert_eq!(held["token"], freed["token"]);
    }
    holders.dedup();
    assert_eq!(
        holders.len(),
        3,
        "three holders, one after another: {holders:?}"
    );
    watch.signal("INT");
}

#[test]
fn completions_and_a_reader_that_went_away() {
    let elector = ElectorProc::spawn(&built_elector(), "pipes", &[], &[]);
    for shell in ["bash", "zsh", "fish"] {
        let (code, script) = stdout(&elector, &["completions", shell]);
        assert_eq!(code, 0);
        assert!(
            script.contains("syncctl") && script.contains("watch"),
            "{shell}"
        );
    }
    assert_eq!(stdout(&elector, &["completions", "tcsh"]).0, 2);

    // `syncctl locks | head -0`: the reader is gone before syncctl writes.
    let mut child = syncctl(&elector, &["locks"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
