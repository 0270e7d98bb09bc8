//! Side by side with client-go's leader election on one Lease, on the real kube-apiserver
//! (sync-testkit's `ControlPlane`, a namespace per test): each respects the other's holder, each
//! takes over from the other's release, and both read and write the same record. Every process
//! has a user of its own, so the API's audit log says who sent what.

#![cfg(feature = "kubernetes")]

use crate::support;

use std::time::{Duration, Instant};

use support::{ElectorProc, holder};
use sync_testkit::ControlPlane;
use sync_testkit::client_go::{ClientGoElector, Timings};

/// Our elector named `identity`, as user `identity` (a client certificate of its own).
fn our_elector(plane: &ControlPlane, namespace: &str, identity: &str, ttl: u64) -> ElectorProc {
    let kubeconfig = plane.user_kubeconfig(identity, namespace);
    support::kube_elector(&kubeconfig, namespace, identity, ttl)
}

fn client_go(
    plane: &ControlPlane,
    namespace: &str,
    identity: &str,
    timings: Timings,
) -> ClientGoElector {
    let kubeconfig = plane.user_kubeconfig(identity, namespace);
    ClientGoElector::start(&kubeconfig, namespace, "test", identity, timings)
}

/// The Lease as `kubectl get lease -o json` prints it.
fn lease(plane: &ControlPlane, namespace: &str) -> serde_json::Value {
    let json = plane.kubectl_ok(&["get", "lease", "test", "-n", namespace, "-o", "json"]);
    serde_json::from_str(&json).unwrap()
}

/// The requests besides watches that `user` has sent, and the watches it opened.
fn requests_and_watches(plane: &ControlPlane, user: &str) -> (u64, u64) {
    let counts = plane.requests(user);
    let watches = counts.get("watch").copied().unwrap_or(0);
    (counts.values().sum::<u64>() - watches, watches)
}

/// client-go's longest wait between two tries: `RetryPeriod` with its jitter factor of 1.2.
fn retry_bound(timings: Timings) -> Duration {
    timings.retry_period.mul_f64(2.2)
}

#[test]
fn client_go_follows_our_holder_and_takes_over_after_our_release() {
    let plane = ControlPlane::shared();
    let namespace = plane.create_namespace("ours-first");
    let ours = our_elector(plane, &namespace, &format!("{namespace}-ours"), 15);
    let first = support::releaser(&ours, "test", 8000);
    first.expect("acquired", Duration::from_secs(20));
    let acquired = Instant::now();
    let timings = Timings::default();
    let theirs = client_go(plane, &namespace, &format!("{namespace}-go"), timings);

    // A follower that reports our holder as the leader.
    let leader = theirs.expect("new-leader", Duration::from_secs(10));
    let holder_identity = lease(plane, &namespace)["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(leader.identity, holder_identity);
    assert!(holder_identity.starts_with(&format!("{namespace}-ours/")));
    std::thread::sleep(Duration::from_secs(6).saturating_sub(acquired.elapsed()));
    assert!(
        theirs
            .transitions()
            .iter()
            .all(|t| t.what != "started-leading"),
        "client-go never led while ours held: {:?}",
        theirs.transitions()
    );

    // Our release: client-go takes over within its retry period.
    first.expect("released", Duration::from_secs(10));
    let released = Instant::now();
    theirs.expect(
        "started-leading",
        retry_bound(timings) + Duration::from_secs(2),
    );
    eprintln!("client-go led {:?} after our release", released.elapsed());
    let record = lease(plane, &namespace);
    assert_eq!(record["spec"]["holderIdentity"], theirs.identity.as_str());
}

#[test]
fn our_waiter_sends_only_its_watch_and_takes_over_at_once_after_client_gos_release() {
    let plane = ControlPlane::shared();
    let namespace = plane.create_namespace("go-first");
    let go_user = format!("{namespace}-go");
    let mut theirs = client_go(plane, &namespace, &go_user, Timings::default());
    theirs.expect("started-leading", Duration::from_secs(20));

    let our_user = format!("{namespace}-ours");
    let ours = our_elector(plane, &namespace, &our_user, 15);
    let waiter = holder(&ours, "test", 15);
    std::thread::sleep(Duration::from_secs(2));
    let before = requests_and_watches(plane, &our_user);
    std::thread::sleep(Duration::from_secs(6));
    let after = requests_and_watches(plane, &our_user);
    eprintln!("our waiting elector in 6 s: (requests, watches) {before:?} -> {after:?}");
    assert_eq!(after, before, "nothing but the watch it already had");
    assert!(after.1 >= 1, "it watches: {:?}", plane.requests(&our_user));
    assert!(
        waiter.next("acquired", Duration::ZERO).is_none(),
        "and it waited"
    );

    // client-go releases (ReleaseOnCancel); our waiter acquires by the watch. client-go
    // releases when its renew loop next wakes (up to a retry period after the cancel) and prints
    // `stopped-leading` right after the release, so the hand-over counts from that line.
    theirs.signal("TERM");
    waiter.expect("acquired", Duration::from_secs(10));
    let acquired_ns = sync_testkit::clock::now_ns();
    let stopped = theirs.expect("stopped-leading", Duration::from_secs(10));
    let took_ms = (acquired_ns as f64 - stopped.at_ns as f64) / 1e6;
    eprintln!("ours acquired {took_ms:.1} ms after client-go's release returned");
    assert!(
        took_ms < 1000.0,
        "by the watch, well within a second, not by a poll or by expiry: {took_ms:.1} ms"
    );
    assert!(theirs.wait_exit(Duration::from_secs(10)).is_some());
    assert_eq!(
        requests_and_watches(plane, &our_user).0 - after.0,
        1,
        "one write took it: {:?}",
        plane.requests(&our_user)
    );
    // Over HTTP/2 the write shared the watch's connection: no new connection to open after a
    // long wait (docs/kubernetes.md, "How it behaves").
    let port: u16 = plane.url().rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(
        sync_testkit::connections_to(ours.pid(), port),
        1,
        "the elector's connections to the API server"
    );
}

#[test]
fn both_write_the_same_record() {
    let plane = ControlPlane::shared();
    let namespace = plane.create_namespace("record");
    let timings = Timings {
        lease_duration: Duration::from_secs(6),
        renew_deadline: Duration::from_secs(4),
        retry_period: Duration::from_secs(1),
    };
    // client-go takes the Lease, then releases it (ReleaseOnCancel).
    let theirs = client_go(plane, &namespace, &format!("{namespace}-go"), timings);
    theirs.expect("started-leading", Duration::from_secs(20));
    let held_by_go = lease(plane, &namespace);
    theirs.signal("TERM");
    theirs.expect("exiting", Duration::from_secs(10));
    let released_by_go = lease(plane, &namespace);

    // Ours takes it, holds it past a renewal, and releases it.
    let ours = our_elector(plane, &namespace, &format!("{namespace}-ours"), 9);
    let first = support::ClientProc::spawn(
        "hold-then-release",
        &ours.url,
        &[
            ("SYNC_TEST_LOCK", "test".to_owned()),
            ("SYNC_TEST_TTL", "9".to_owned()),
            ("SYNC_TEST_HOLD_MS", "4000".into()),
        ],
    );
    let token = support::token(&first.expect("acquired", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_secs(3));
    let held_by_us = lease(plane, &namespace);
    first.expect("released", Duration::from_secs(10));
    let released_by_us = lease(plane, &namespace);
    for (what, record) in [
        ("client-go holding", &held_by_go),
        ("client-go released", &released_by_go),
        ("ours holding", &held_by_us),
        ("ours released", &released_by_us),
    ] {
        eprintln!("{what}: {}", record["spec"]);
    }

    let keys = |lease: &serde_json::Value| {
        let mut keys: Vec<String> = lease["spec"].as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&held_by_go), keys(&held_by_us), "the same fields held");
    assert_eq!(keys(&released_by_go), keys(&released_by_us), "and released");
    assert_eq!(held_by_go["spec"]["leaseDurationSeconds"], 6);
    assert_eq!(held_by_us["spec"]["leaseDurationSeconds"], 9);
    for released in [&released_by_go, &released_by_us] {
        assert_eq!(released["spec"]["holderIdentity"], "", "{released}");
        assert_eq!(released["spec"]["leaseDurationSeconds"], 1, "{released}");
    }
    for (who, record) in [
        ("client-go", &held_by_go),
        ("ours", &held_by_us),
        ("client-go", &released_by_go),
        ("ours", &released_by_us),
    ] {
        for time in ["acquireTime", "renewTime"] {
            let value = record["spec"][time].as_str().unwrap_or_default();
            // MicroTime: RFC 3339 with microseconds, in UTC.
            assert!(
                value.len() == "2026-11-30T05:00:00.000000Z".len() && value.ends_with('Z'),
                "{who}'s {time}: {value}"
            );
        }
    }
    assert_ne!(
        held_by_us["spec"]["renewTime"], held_by_us["spec"]["acquireTime"],
        "ours renewed"
    );
    let transitions = |lease: &serde_json::Value| lease["spec"]["leaseTransitions"].as_u64();
    assert_eq!(
        transitions(&released_by_go),
        transitions(&held_by_go),
        "a release keeps leaseTransitions, on both sides"
    );
    assert_eq!(transitions(&released_by_us), transitions(&held_by_us));
    assert_eq!(
        transitions(&held_by_us),
        transitions(&held_by_go).map(|t| t + 1),
        "a change of holder adds one"
    );
    assert_eq!(
        token,
        transitions(&held_by_us).unwrap() + 1,
        "our token is leaseTransitions + 1"
    );
}

/// Two readings of the shared clock, or a reading and a token.
type Span = (u64, u64);

/// What one process (one run of it) did, on the shared clock: the starts and ends of its
/// holdings as it reported them, and the pauses and the kill the test gave it.
#[derive(Debug, Default)]
struct Life {
    who: String,
    /// (when, what): `start`, `end`, `pause`, `resume`, `killed`.
    events: Vec<(u64, &'static str)>,
    /// Our fencing tokens, with when each was granted.
    tokens: Vec<(u64, u64)>,
}

impl Life {
    /// Its holdings, and the tokens of ours among them. A pause ends one: a paused holder counts
    /// as gone from the moment it stopped (client-go's holder, resumed, believes it leads until its
    /// renew deadline, and only fencing could stop it acting; ours is told it lost). A holding
    /// reported within `stale` after a resume counts as gone too: it may have been granted before
    /// the pause and answered after it, which is the same paused holder.
    fn holdings(&self, stale: Duration) -> (Vec<Span>, Vec<Span>) {
        let mut events = self.events.clone();
        events.sort();
        let mut holdings = Vec::new();
        let mut open: Option<u64> = None;
        let mut resumed: Option<u64> = None;
        let mut stale_starts = Vec::new();
        for (at, what) in events {
            match what {
                "start" if resumed.is_some_and(|r| at - r < stale.as_nanos() as u64) => {
                    stale_starts.push(at);
                    open = None;
                }
                "start" => open = Some(at),
                "resume" => resumed = Some(at),
                "end" | "pause" | "killed" => {
                    if let Some(start) = open.take() {
                        holdings.push((start, at));
                    }
                }
                _ => {}
            }
        }
        if let Some(start) = open {
            holdings.push((start, u64::MAX));
        }
        let tokens = self
            .tokens
            .iter()
            .filter(|(at, _)| !stale_starts.contains(at))
            .copied()
            .collect();
        (holdings, tokens)
    }

    fn from_client_go(candidate: &ClientGoElector, mut life: Life) -> Life {
        for t in candidate.transitions() {
            match t.what.as_str() {
                "started-leading" => life.events.push((t.at_ns, "start")),
                "stopped-leading" | "exiting" => life.events.push((t.at_ns, "end")),
                _ => {}
            }
        }
        life
    }

    fn from_our_client(lines: &[String], mut life: Life) -> Life {
        let at = |line: &str| line.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok());
        for line in lines {
            if let (Some(rest), Some(t)) = (line.strip_prefix("acquired "), at(line)) {
                life.events.push((t, "start"));
                if let Some(token) = rest.split(' ').next().and_then(|n| n.parse().ok()) {
                    life.tokens.push((t, token));
                }
            } else if let (true, Some(t)) = (
                line.starts_with("releasing") || line.starts_with("lost"),
                at(line),
            ) {
                life.events.push((t, "end"));
            }
        }
        life
    }
}

/// A tiny seeded generator, so a failing run can be repeated with its seed.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// A process of either side that the nemesis can stop, kill and replace.
enum Candidate {
    Go(ClientGoElector),
    Ours(support::ClientProc),
}

#[test]
fn two_client_go_candidates_and_two_of_our_electors_never_hold_at_once() {
    let plane = ControlPlane::shared();
    let namespace = plane.create_namespace("mixed");
    let timings = Timings {
        lease_duration: Duration::from_secs(4),
        renew_deadline: Duration::from_secs(3),
        retry_period: Duration::from_secs(1),
    };
    let ttl = 4;
    let seed = std::env::var("SYNC_MIXED_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(sync_testkit::clock::now_ns);
    eprintln!("seed {seed} (SYNC_MIXED_SEED repeats the run's choices)");
    let mut dice = Dice(seed);
    let start_elector =
        |i: usize| our_elector(plane, &namespace, &format!("{namespace}-e{i}"), ttl);
    let mut electors: Vec<ElectorProc> = (0..2).map(start_elector).collect();
    let go_kubeconfigs: Vec<_> = (0..2)
        .map(|i| plane.user_kubeconfig(&format!("{namespace}-go{i}"), &namespace))
        .collect();
    let start_go = |slot: usize, run: usize| {
        let identity = format!("go{slot}-{run}");
        ClientGoElector::start(
            &go_kubeconfigs[slot],
            &namespace,
            "test",
            &identity,
            timings,
        )
    };
    let start_ours = |elector: &ElectorProc| {
        support::ClientProc::spawn(
            "churn",
            &elector.url,
            &[
                ("SYNC_TEST_LOCK", "test".to_owned()),
                ("SYNC_TEST_TTL", ttl.to_string()),
                // Idle long enough between holdings that client-go, which polls, wins some.
                ("SYNC_TEST_IDLE_MAX_MS", "5000".to_owned()),
            ],
        )
    };
    // Slots 0 and 1: client-go; 2 to 5: our clients, two on each elector (slot s on elector
    // (s - 2) / 2).
    let mut runs = [0usize; 6];
    let mut slots: Vec<(Candidate, Life)> = (0..6)
        .map(|slot| {
            let life = Life {
                who: format!("slot {slot} run 0"),
                ..Life::default()
            };
            if slot < 2 {
                (Candidate::Go(start_go(slot, 0)), life)
            } else {
                (Candidate::Ours(start_ours(&electors[(slot - 2) / 2])), life)
            }
        })
        .collect();
    // Every version of the Lease's leaseTransitions, as a watch sees it.
    std::thread::sleep(Duration::from_secs(3));
    let mut watch = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(plane.admin_kubeconfig())
        .args(["get", "lease", "test", "-n", &namespace, "-w"])
        .args(["-o", "jsonpath={.spec.leaseTransitions}{\"\\n\"}"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let watched = std::thread::spawn({
        let stdout = watch.stdout.take().unwrap();
        move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.trim().parse::<u64>().ok())
                .collect::<Vec<u64>>()
        }
    });

    let mut lives: Vec<Life> = Vec::new();
    let finish = |candidate: Candidate, life: Life| match candidate {
        Candidate::Go(go) => Life::from_client_go(&go, life),
        Candidate::Ours(ours) => {
            std::thread::sleep(Duration::from_millis(100));
            Life::from_our_client(&ours.drain(), life)
        }
    };
    let pid = |candidate: &Candidate| match candidate {
        Candidate::Go(go) => go.pid(),
        Candidate::Ours(ours) => ours.pid(),
    };
    let mut actions = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1000 + dice.below(2000)));
        // Half the time the nemesis picks client-go's leader, if it leads: it renews for as long
        // as it lives, and ours would wait the whole run.
        let holder = plane
            .kubectl(&[
                "get",
                "lease",
                "test",
                "-n",
                &namespace,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ])
            .stdout;
        let go_leader = String::from_utf8_lossy(&holder)
            .strip_prefix("go")
            .and_then(|rest| rest.split('-').next()?.parse::<usize>().ok());
        let slot = match go_leader {
            Some(slot) if dice.below(2) == 0 => slot,
            _ => dice.below(6) as usize,
        };
        let action = dice.below(4);
        let now = sync_testkit::clock::now_ns;
        match action {
            // client-go's release: cancel it (ReleaseOnCancel), and start it again. Ours
            // release by themselves, so for them: kill -9 and start again.
            0 | 1 => {
                let (candidate, mut life) = slots.remove(slot);
                if action == 0 && matches!(candidate, Candidate::Go(_)) {
                    sync_testkit::signal_pid(pid(&candidate), "TERM");
                    if let Candidate::Go(go) = &candidate {
                        go.next("exiting", Duration::from_secs(10));
                    }
                    actions.push(format!("slot {slot}: cancelled"));
                } else {
                    sync_testkit::signal_pid(pid(&candidate), "KILL");
                    life.events.push((now(), "killed"));
                    actions.push(format!("slot {slot}: kill -9"));
                }
                lives.push(finish(candidate, life));
                runs[slot] += 1;
                let fresh = Life {
                    who: format!("slot {slot} run {}", runs[slot]),
                    ..Life::default()
                };
                let candidate = if slot < 2 {
                    Candidate::Go(start_go(slot, runs[slot]))
                } else {
                    Candidate::Ours(start_ours(&electors[(slot - 2) / 2]))
                };
                slots.insert(slot, (candidate, fresh));
            }
            // One of our electors: SIGSTOP past the lease then SIGCONT, or kill -9 and start
            // again. Its clients are told they lost (or are cut off); each is replaced by a new one.
            3 => {
                let e = dice.below(2) as usize;
                if dice.below(2) == 0 {
                    electors[e].signal("STOP");
                    std::thread::sleep(Duration::from_secs(ttl) * 3 / 2);
                    electors[e].signal("CONT");
                    actions.push(format!("elector {e}: paused"));
                } else {
                    electors[e].signal("KILL");
                    electors[e] = start_elector(e);
                    actions.push(format!("elector {e}: kill -9"));
                }
                for slot in [2 + 2 * e, 3 + 2 * e] {
                    let (candidate, mut life) = slots.remove(slot);
                    sync_testkit::signal_pid(pid(&candidate), "KILL");
                    life.events.push((now(), "killed"));
                    lives.push(finish(candidate, life));
                    runs[slot] += 1;
                    let fresh = Life {
                        who: format!("slot {slot} run {}", runs[slot]),
                        ..Life::default()
                    };
                    slots.insert(slot, (Candidate::Ours(start_ours(&electors[e])), fresh));
                }
            }
            // SIGSTOP past the lease, then SIGCONT.
            _ => {
                let (candidate, life) = &mut slots[slot];
                sync_testkit::signal_pid(pid(candidate), "STOP");
                life.events.push((now(), "pause"));
                std::thread::sleep(Duration::from_secs(ttl) * 3 / 2);
                sync_testkit::signal_pid(pid(candidate), "CONT");
                life.events.push((now(), "resume"));
                actions.push(format!("slot {slot}: paused"));
            }
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    // Stop everyone first, so that no holding is still open while another's reports are read.
    for (candidate, life) in &mut slots {
        sync_testkit::signal_pid(pid(candidate), "CONT");
        sync_testkit::signal_pid(pid(candidate), "KILL");
        life.events.push((sync_testkit::clock::now_ns(), "killed"));
    }
    for (candidate, life) in slots {
        lives.push(finish(candidate, life));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let transitions = watched.join().unwrap();
    eprintln!("nemesis: {actions:?}");

    // Never two holders at once, from every side's own reports on one clock. A grant in flight
    // across a pause is a paused holder's: the longer of the two lease lengths covers both sides.
    let stale = timings.lease_duration.max(Duration::from_secs(ttl));
    let mut holdings: Vec<(u64, u64, String)> = lives
        .iter()
        .flat_map(|life| {
            life.holdings(stale)
                .0
                .into_iter()
                .map(|(start, end)| (start, end, life.who.clone()))
        })
        .collect();
    holdings.sort();
    let mut overlaps = Vec::new();
    let mut latest: Option<&(u64, u64, String)> = None;
    for holding in &holdings {
        if let Some(before) = latest {
            if holding.0 < before.1 {
                overlaps.push(format!("{before:?} and {holding:?}"));
            }
            if holding.1 > before.1 {
                latest = Some(holding);
            }
        } else {
            latest = Some(holding);
        }
    }
    let go_holdings = holdings
        .iter()
        .filter(|h| h.2.starts_with("slot 0") || h.2.starts_with("slot 1"))
        .count();
    eprintln!(
        "{} holdings ({go_holdings} by client-go), {} Lease versions seen",
        holdings.len(),
        transitions.len()
    );
    assert!(overlaps.is_empty(), "two holders at once: {overlaps:#?}");
    assert!(
        go_holdings >= 1 && holdings.len() - go_holdings >= 1,
        "both sides led: {holdings:?}"
    );
    assert!(holdings.len() >= 6, "the lock changed hands: {holdings:?}");

    // Our fencing tokens and the Lease's leaseTransitions only go up.
    let mut tokens: Vec<(u64, u64)> = lives.iter().flat_map(|l| l.holdings(stale).1).collect();
    tokens.sort();
    assert!(
        tokens.windows(2).all(|w| w[0].1 < w[1].1),
        "our tokens, in order of grant: {tokens:?}"
    );
    assert!(
        transitions.windows(2).all(|w| w[0] <= w[1]),
        "leaseTransitions as the watch saw them: {transitions:?}"
    );
    assert!(transitions.last() > transitions.first(), "{transitions:?}");
}
