//! `syncctl run` as a user runs it: the real binary, a real elector (memory store), real shell
//! commands, and a file they write to show what happened when.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sync_testkit::{ElectorProc, Proc, built_elector, free_port, temp_dir, wait_child};

fn elector(ttl: &str) -> ElectorProc {
    ElectorProc::spawn(&built_elector(), "syncctl-test", &["--ttl", ttl], &[])
}

/// `syncctl ARGS` against `elector`, not yet started.
fn syncctl(elector: &ElectorProc, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_syncctl"));
    command
        .env("SYNC_ELECTOR_URL", &elector.url)
        .env_remove("RUST_BACKTRACE")
        .args(args);
    command
}

fn output(mut command: Command) -> (i32, String) {
    let Output { status, stderr, .. } = command.output().expect("syncctl runs");
    (
        status.code().expect("syncctl exits, not killed"),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Waits until `file` contains `text`.
fn wait_for(file: &Path, text: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !std::fs::read_to_string(file)
        .unwrap_or_default()
        .contains(text)
    {
        assert!(
            Instant::now() < deadline,
            "{} never said {text:?}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A command that writes `started` to `file`, and on SIGTERM writes `term` and exits 7.
fn patient(file: &Path) -> Vec<String> {
    let script = format!(
        "trap 'echo term >> {f}; exit 7' TERM; echo started >> {f}; while :; do sleep 0.05; done",
        f = file.display()
    );
    vec!["sh".into(), "-c".into(), script]
}

fn spawn(mut command: Command) -> Proc {
    Proc::new(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("syncctl starts"),
    )
}

#[test]
fn two_runs_on_one_lock_never_overlap() {
    let elector = elector("15s");
    let dir = temp_dir("syncctl-overlap");
    let file = dir.join("log");
    let script = format!(
        "echo \"start $$ $SYNC_FENCING_TOKEN\" >> {f}; sleep 0.1; echo \"end $$\" >> {f}",
        f = file.display()
    );
    let runners: Vec<_> = (0..2)
        .map(|_| {
            let (url, script) = (elector.url.clone(), script.clone());
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let status = Command::new(env!("CARGO_BIN_EXE_syncctl"))
                        .args([
                            "--elector",
                            &url,
                            "run",
                            "shared",
                            "--",
                            "sh",
                            "-c",
                            &script,
                        ])
                        .status()
                        .unwrap();
                    assert!(status.success());
                }
            })
        })
        .collect();
    for runner in runners {
        runner.join().unwrap();
    }
    let log = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 20, "{log}");
    let mut last_token = 0;
    for pair in lines.chunks(2) {
        let start: Vec<&str> = pair[0].split(' ').collect();
        let end: Vec<&str> = pair[1].split(' ').collect();
        assert_eq!(
            (start[0], end[0], start[1]),
            ("start", "end", end[1]),
            "each start is followed by its own end:\n{log}"
        );
        let token: u64 = start[2].parse().unwrap();
        assert!(token > last_token, "fencing tokens rise:\n{log}");
        last_token = token;
    }
}

#[test]
fn exit_statuses() {
    let elector = elector("15s");
    let run = |args: &[&str]| output(syncctl(&elector, args));

    // The command's own status, and a shell's 128 + N when a signal killed it.
    assert_eq!(run(&["run", "s", "--", "sh", "-c", "exit 3"]).0, 3);
    assert_eq!(run(&["run", "s", "--", "sh", "-c", "kill -9 $$"]).0, 137);
    let (code, err) = run(&["run", "s", "--", "no-such-command-anywhere"]);
    assert_eq!(code, 127, "{err}");
    assert!(
        err.contains("no-such-command-anywhere: command not found"),
        "{err}"
    );

    let dir = temp_dir("syncctl-statuses");
    let script = dir.join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let (code, err) = run(&["run", "s", "--", script.to_str().unwrap()]);
    assert_eq!(code, 126, "{err}");
    assert!(err.contains("permission denied"), "{err}");

    // Bad input: what to fix, and nothing else happens.
    let (code, err) = run(&["run", "Bad_Name", "--", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("lower-case letters, digits"), "{err}");
    let (code, err) = run(&["run", "s", "--wait", "10", "--", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("like 30s, 1m30s"), "{err}");
    let (code, err) = run(&["run", "s"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Usage: syncctl run"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );

    // The elector is not there.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut command = syncctl(&elector, &["--elector", &nowhere, "run", "s", "--", "true"]);
    command.env_remove("SYNC_ELECTOR_URL");
    let (code, err) = output(command);
    assert_eq!(code, 69, "{err}");
    assert!(
        err.contains(&nowhere) && err.contains("--elector URL"),
        "{err}"
    );

    // --wait runs out while another holds the lock: the message names the holder.
    let dir = temp_dir("syncctl-wait");
    let file = dir.join("log");
    let mut holder = syncctl(&elector, &["run", "busy", "--"]);
    holder.args(patient(&file));
    let mut holder = spawn(holder);
    wait_for(&file, "started", Duration::from_secs(10));
    let (code, err) = run(&["run", "busy", "--wait", "300ms", "--", "true"]);
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("held by syncctl-test/"), "{err}");
    // SIGTERM, which syncctl passes on, so that the command ends too (a SIGKILLed syncctl
    // cannot stop it: docs/syncctl.md).
    holder.signal("TERM");
    assert!(holder.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn a_refused_request_is_status_1_with_the_electors_reason() {
    // An elector that asks for a bearer token, and a syncctl that has none.
    let dir = temp_dir("syncctl-token");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let elector = ElectorProc::spawn(
        &built_elector(),
        "syncctl-test",
        &["--token-file", token.to_str().unwrap()],
        &[],
    );
    let mut command = syncctl(&elector, &["run", "s", "--", "true"]);
    command.env_remove("SYNC_ELECTOR_TOKEN_FILE");
    let (code, err) = output(command);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refused") && err.contains("401"), "{err}");
    // With the token, the same command runs.
    let mut command = syncctl(&elector, &["run", "s", "--", "true"]);
    command.env("SYNC_ELECTOR_TOKEN_FILE", &token);
    assert_eq!(output(command).0, 0);
}

#[test]
fn signals_are_passed_on_and_the_lock_is_released_at_exit() {
    let elector = elector("15s");
    let dir = temp_dir("syncctl-signals");
    let file = dir.join("log");
    for signal in ["TERM", "INT"] {
        let _ = std::fs::remove_file(&file);
        let mut command = syncctl(&elector, &["run", "sig", "--"]);
        // INT: the script traps TERM only, so SIGINT kills it: 128 + 2.
        command.args(patient(&file));
        let mut running = spawn(command);
        wait_for(&file, "started", Duration::from_secs(10));
        running.signal(signal);
        let status = running
            .wait_exit(Duration::from_secs(10))
            .expect("syncctl exits after its command does");
        match signal {
            "TERM" => {
                assert_eq!(status.code(), Some(7));
                wait_for(&file, "term", Duration::from_secs(1));
            }
            _ => assert_eq!(status.code(), Some(130)),
        }
        // Released: the next run takes the lock at once.
        let (code, err) = output(syncctl(
            &elector,
            &["run", "sig", "--wait", "1s", "--", "true"],
        ));
        assert_eq!(code, 0, "{err}");
    }
}

#[test]
fn the_command_is_stopped_when_the_elector_dies() {
    let elector = elector("5s");
    let dir = temp_dir("syncctl-lost");
    let file: PathBuf = dir.join("log");
    let mut command = syncctl(&elector, &["run", "lost", "--grace", "2s", "--"]);
    command.args(patient(&file));
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&file, "started", Duration::from_secs(10));
    let killed = Instant::now();
    elector.signal("KILL");
    let status = wait_child(&mut child, Duration::from_secs(30)).expect("syncctl exits");
    let stopped_within = killed.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(76), "{stderr}");
    assert!(std::fs::read_to_string(&file).unwrap().contains("term"));
    assert!(stderr.contains("lock lost was lost"), "{stderr}");
    // Within the lock's validity window (its ttl): nobody else could have taken it before.
    assert!(
        stopped_within < Duration::from_secs(5),
        "stopped {stopped_within:?} after the elector died"
    );
}

/// A command that writes `started $VAR` to `file` and waits to be stopped.
fn patient_saying(file: &Path, var: &str) -> Vec<String> {
    let script = format!(
        "echo \"started ${var}\" >> {f}; trap 'exit 0' TERM; while :; do sleep 0.05; done",
        f = file.display()
    );
    vec!["sh".into(), "-c".into(), script]
}

#[test]
fn permits_and_modes_admit_as_many_as_they_say() {
    let elector = elector("15s");
    let dir = temp_dir("syncctl-primitives");
    let run = |args: &[&str]| output(syncctl(&elector, args));

    // Two permits: two commands run, each with its permit; a third waits.
    let file = dir.join("permits");
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut command = syncctl(&elector, &["run", "pool", "--permits", "2", "--"]);
        command.args(patient_saying(&file, "SYNC_PERMIT"));
        holders.push(spawn(command));
    }
    wait_for(&file, "started 0", Duration::from_secs(10));
    wait_for(&file, "started 1", Duration::from_secs(10));
    let (code, err) = run(&[
        "run",
        "pool",
        "--permits",
        "2",
        "--wait",
        "300ms",
        "--",
        "true",
    ]);
    assert_eq!(code, 75, "{err}");
    // The name is a semaphore of 2 while held: a lock or another size is refused, saying so.
    let (code, err) = run(&["run", "pool", "--wait", "1s", "--", "true"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pool") && err.contains("semaphore"), "{err}");
    let (code, err) = run(&[
        "run",
        "pool",
        "--permits",
        "3",
        "--wait",
        "1s",
        "--",
        "true",
    ]);
    assert_eq!(code, 1, "{err}");
    for mut holder in holders {
        holder.signal("TERM");
        assert!(holder.wait_exit(Duration::from_secs(10)).is_some());
    }

    // Shared runs together; an exclusive one waits for them.
    let file = dir.join("modes");
    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut command = syncctl(&elector, &["run", "config", "--shared", "--"]);
        command.args(patient_saying(&file, "SYNC_MODE"));
        readers.push(spawn(command));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&file)
        .unwrap_or_default()
        .matches("started shared")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "two readers at once");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, err) = run(&[
        "run",
        "config",
        "--exclusive",
        "--wait",
        "300ms",
        "--",
        "true",
    ]);
    assert_eq!(code, 75, "{err}");
    for mut reader in readers {
        reader.signal("TERM");
        assert!(reader.wait_exit(Duration::from_secs(10)).is_some());
    }
    let (code, err) = run(&[
        "run",
        "config",
        "--exclusive",
        "--wait",
        "5s",
        "--",
        "sh",
        "-c",
        "test \"$SYNC_MODE\" = exclusive",
    ]);
    assert_eq!(code, 0, "{err}");

    // Bad input: what to fix.
    for args in [
        &["run", "pool", "--permits", "0", "--", "true"][..],
        &["run", "pool", "--permits", "129", "--", "true"],
        &["run", "pool", "--permits", "2", "--shared", "--", "true"],
        &["run", "pool", "--shared", "--exclusive", "--", "true"],
    ] {
        let (code, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("1..=128") || err.contains("cannot be used with"),
            "{args:?}: {err}"
        );
    }
}
