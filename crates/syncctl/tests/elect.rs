//! `syncctl elect` against a real elector: leaders take turns as each one's command exits, the
//! leader's value is published, `--once` ends after one term, signals stop it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sync_testkit::{ElectorProc, Proc, built_elector, temp_dir};

fn syncctl(elector: &ElectorProc, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_syncctl"));
    command
        .env("SYNC_ELECTOR_URL", &elector.url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .args(args);
    command
}

#[test]
fn leadership_is_handed_over_when_the_leaders_command_exits() {
    let elector = ElectorProc::spawn(&built_elector(), "elect", &[], &[]);
    let dir = temp_dir("syncctl-elect");
    let file = dir.join("terms");
    let candidate = |id: &str| {
        // Each term: record who leads and the value followers see, lead briefly, step down.
        let script = format!(
            "echo \"{id} $SYNC_FENCING_TOKEN\" >> {f}; sleep 0.3",
            f = file.display()
        );
        Proc::new(
            syncctl(
                &elector,
                &[
                    "elect",
                    "leader",
                    "--value",
                    &format!("addr-{id}"),
                    "--",
                    "sh",
                    "-c",
                    &script,
                ],
            )
            .spawn()
            .unwrap(),
        )
    };
    let a = candidate("a");
    std::thread::sleep(Duration::from_millis(100));
    let b = candidate("b");

    // While someone leads, followers read its value.
    let deadline = Instant::now() + Duration::from_secs(10);
    let leader = loop {
        let out = syncctl(&elector, &["get", "leader", "-o", "json"])
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if state["holder"].is_string() {
            break state;
        }
        assert!(Instant::now() < deadline, "nobody led within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        leader["value"].as_str().unwrap().starts_with("addr-"),
        "{leader}"
    );

    // Six terms: the two take turns, and each term's token is above the last.
    let deadline = Instant::now() + Duration::from_secs(30);
    let terms = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.lines().count() >= 6 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "only these terms in 30 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let terms: Vec<(&str, u64)> = terms
        .lines()
        .take(6)
        .map(|l| {
            let (who, token) = l.split_once(' ').unwrap();
            (who, token.parse().unwrap())
        })
        .collect();
    assert!(
        terms
            .windows(2)
            .all(|w| w[0].0 != w[1].0 && w[0].1 < w[1].1),
        "leaders alternate and tokens rise: {terms:?}"
    );
    // SIGTERM, passed on to a leader's command; a candidate still campaigning stops at once.
    for mut candidate in [a, b] {
        candidate.signal("TERM");
        assert!(candidate.wait_exit(Duration::from_secs(10)).is_some());
    }
}

#[test]
fn once_returns_the_commands_status_and_signals_stop_a_leader() {
    let elector = ElectorProc::spawn(&built_elector(), "once", &[], &[]);
    let status = syncctl(
        &elector,
        &["elect", "one", "--once", "--", "sh", "-c", "exit 5"],
    )
    .status()
    .unwrap();
    assert_eq!(status.code(), Some(5));

    let dir = temp_dir("syncctl-elect-signal");
    let file = dir.join("log");
    let script = format!(
        "trap 'echo term >> {f}; exit 7' TERM; echo started >> {f}; while :; do sleep 0.05; done",
        f = file.display()
    );
    let mut leader = Proc::new(
        syncctl(&elector, &["elect", "sig", "--", "sh", "-c", &script])
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&file)
        .unwrap_or_default()
        .contains("started")
    {
        assert!(
            Instant::now() < deadline,
            "the leader's command never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    leader.signal("TERM");
    let status = leader
        .wait_exit(Duration::from_secs(10))
        .expect("syncctl elect exits when its command does after a SIGTERM");
    assert_eq!(status.code(), Some(7));
    assert!(std::fs::read_to_string(&file).unwrap().contains("term"));
}
