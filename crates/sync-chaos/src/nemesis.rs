//! The nemesis: one fault at a time, picked from a shuffled deck of the faults that apply to the
//! store, injected, held, healed, and written down with its times.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use sync_testkit::clock::now_ns;
use sync_testkit::stores::{Backend, Plane, StoreKind};

use crate::pods::System;
use crate::register::Register;
use crate::rng::Rng;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// `kill -9` of the worker that wrote last (the holder, as far as the register knows), then a
    /// restart.
    KillHolder,
    /// SIGSTOP of the holder for 1.5 ttl, then SIGCONT: a holder paused past its lease.
    PauseHolder,
    /// `kill -9` of the holder's elector, restarted 1 s later on the same address.
    KillElector,
    /// SIGSTOP of the holder's elector for 1.5 ttl, then SIGCONT: a hung elector.
    PauseElector,
    /// The Kubernetes API answers 500 to everyone for 1.5 ttl.
    ApiErrors,
    /// The Kubernetes API answers everyone 200 to 800 ms late for 2 ttl.
    ApiLatency,
    /// The holder's elector cannot reach the Kubernetes API for 1.5 ttl.
    ApiPartition,
    /// The Kubernetes API drops every watch.
    WatchDrop,
    /// `kill -9` of the etcd leader, restarted after 1 ttl; healed when the cluster is healthy.
    EtcdLeaderKill,
    /// Two of the three etcd members killed (no quorum) for 1.5 ttl, then restarted; healed when
    /// the cluster is healthy again.
    EtcdQuorumLoss,
    /// The holder's pod cut off from etcd (its network namespace's link down) for 1.5 ttl.
    NetPartition,
    /// `kill -9` of the real kube-apiserver, restarted after 1 ttl; healed when it is ready.
    ApiserverKill,
    /// SIGSTOP of the real kube-apiserver for 1.5 ttl, then SIGCONT.
    ApiserverPause,
    /// `kill -9` of the real kube-apiserver's etcd, restarted after 1 ttl; healed when the
    /// apiserver is ready again.
    ApiserverEtcdKill,
}

impl Fault {
    /// The faults that apply to `kind`; `netns` says whether pods have network namespaces.
    pub fn for_store(kind: StoreKind, netns: bool) -> Vec<Fault> {
        let mut faults = vec![
            Fault::KillHolder,
            Fault::PauseHolder,
            Fault::KillElector,
            Fault::PauseElector,
        ];
        match kind {
            StoreKind::Memory => {}
            StoreKind::Kubernetes => faults.extend([
                Fault::ApiErrors,
                Fault::ApiLatency,
                Fault::ApiPartition,
                Fault::WatchDrop,
            ]),
            StoreKind::Etcd => {
                faults.extend([Fault::EtcdLeaderKill, Fault::EtcdQuorumLoss]);
                if netns {
                    faults.push(Fault::NetPartition);
                }
            }
            StoreKind::KubeApiServer => faults.extend([
                Fault::ApiserverKill,
                Fault::ApiserverPause,
                Fault::ApiserverEtcdKill,
            ]),
        }
        faults
    }

    /// Whether, while it is in force, waiters may wait for the fault's own sake: the store is
    /// down or slow for everyone, or an elector that waiters talk to is stopped. The liveness
    /// check does not count those stretches; every other fault leaves at most a dead holder,
    /// whose lease runs out within the ttl.
    pub fn halts_waiters(self) -> bool {
        matches!(
            self,
            Fault::KillElector
                | Fault::PauseElector
                | Fault::ApiErrors
                | Fault::ApiLatency
                | Fault::EtcdLeaderKill
                | Fault::EtcdQuorumLoss
                | Fault::ApiserverKill
                | Fault::ApiserverPause
                | Fault::ApiserverEtcdKill
        )
    }

    /// The fault's name in reports.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// A fault as injected.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    /// What.
    pub fault: Fault,
    /// When it began, on the shared clock.
    pub start: u64,
    /// When it was healed (the same as `start` for an instant fault).
    pub end: u64,
    /// The worker it hit, for worker faults.
    pub worker: Option<u32>,
    /// The pod it hit, for pod faults.
    pub pod: Option<usize>,
}

/// Picks faults from a deck that is reshuffled each time it runs out, so every kind comes up once
/// before any comes up twice.
pub struct Deck {
    faults: Vec<Fault>,
    next: Vec<Fault>,
}

impl Deck {
    /// A deck of `faults`.
    pub fn new(faults: Vec<Fault>) -> Self {
        Self {
            faults,
            next: Vec::new(),
        }
    }

    /// The next fault.
    pub fn draw(&mut self, rng: &mut Rng) -> Fault {
        if self.next.is_empty() {
            self.next = self.faults.clone();
            rng.shuffle(&mut self.next);
        }
        self.next.pop().expect("a deck has faults")
    }

    /// How many kinds the deck holds.
    pub fn kinds(&self) -> usize {
        self.faults.len()
    }
}

/// Injects `fault`, waits it out, heals it, and says what happened.
pub fn inject(
    system: &mut System,
    register: &Register,
    fault: Fault,
    ttl: Duration,
    rng: &mut Rng,
) -> Result<Injected> {
    let held = ttl * 3 / 2;
    let holder = register
        .last_writer()
        .unwrap_or_else(|| rng.below(system.workers.len() as u64) as u32);
    let pod = system.pod_of(holder);
    let start = now_ns();
    let (mut worker, mut at_pod) = (None, None);
    match fault {
        Fault::KillHolder => {
            worker = Some(holder);
            system.kill_worker(holder);
            std::thread::sleep(rng.millis(100, 1000));
            system.start_worker(holder)?;
        }
        Fault::PauseHolder => {
            worker = Some(holder);
            system.pause_worker(holder, true);
            std::thread::sleep(held);
            system.pause_worker(holder, false);
        }
        Fault::KillElector => {
            at_pod = Some(pod);
            system.kill_elector(pod);
            std::thread::sleep(Duration::from_secs(1));
            system.start_elector(pod)?;
        }
        Fault::PauseElector => {
            at_pod = Some(pod);
            system.pause_elector(pod, true);
            std::thread::sleep(held);
            system.pause_elector(pod, false);
        }
        Fault::ApiErrors | Fault::ApiLatency | Fault::ApiPartition | Fault::WatchDrop => {
            let Backend::Kubernetes { server, .. } = &system.backend else {
                anyhow::bail!("{} needs the Kubernetes store", fault.name());
            };
            match fault {
                Fault::ApiErrors => {
                    server.set_failing(Some(500));
                    std::thread::sleep(held);
                    server.set_failing(None);
                }
                Fault::ApiLatency => {
                    server.set_latency(rng.millis(200, 800));
                    std::thread::sleep(ttl * 2);
                    server.set_latency(Duration::ZERO);
                }
                Fault::ApiPartition => {
                    at_pod = Some(pod);
                    let client = system.pods[pod].identity.clone();
                    server.set_partitioned(&client, true);
                    std::thread::sleep(held);
                    server.set_partitioned(&client, false);
                }
                _ => server.drop_watches(),
            }
        }
        Fault::EtcdLeaderKill | Fault::EtcdQuorumLoss => {
            let Backend::Etcd(cluster) = &mut system.backend else {
                anyhow::bail!("{} needs the etcd store", fault.name());
            };
            let leader = cluster.leader();
            let victims: Vec<usize> = if fault == Fault::EtcdLeaderKill {
                vec![leader]
            } else {
                vec![leader, (leader + 1) % cluster.size()]
            };
            for &m in &victims {
                cluster.kill(m);
            }
            std::thread::sleep(if fault == Fault::EtcdLeaderKill {
                ttl
            } else {
                held
            });
            for &m in &victims {
                cluster.restart(m);
            }
            // Healed once the cluster has a leader again.
            let all: Vec<usize> = (0..cluster.size()).collect();
            cluster.wait_healthy(&all);
        }
        Fault::ApiserverKill | Fault::ApiserverPause | Fault::ApiserverEtcdKill => {
            let Backend::KubeApiServer {
                plane: Plane::Own(plane),
                ..
            } = &mut system.backend
            else {
                anyhow::bail!("{} needs a kube-apiserver of the run's own", fault.name());
            };
            match fault {
                Fault::ApiserverKill => {
                    plane.kill_apiserver();
                    std::thread::sleep(ttl);
                    plane.restart_apiserver();
                }
                Fault::ApiserverPause => {
                    plane.pause_apiserver(true);
                    std::thread::sleep(held);
                    plane.pause_apiserver(false);
                }
                _ => {
                    plane.etcd().kill(0);
                    std::thread::sleep(ttl);
                    plane.etcd().restart(0);
                    plane.etcd().wait_healthy(&[0]);
                    plane.wait_ready();
                }
            }
        }
        Fault::NetPartition => {
            at_pod = Some(pod);
            let netns = system.pods[pod]
                .netns
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("net-partition needs network namespaces"))?;
            netns.partition(true)?;
            std::thread::sleep(held);
            netns.partition(false)?;
        }
    }
    let end = if matches!(fault, Fault::KillHolder | Fault::WatchDrop) {
        start
    } else {
        now_ns()
    };
    Ok(Injected {
        fault,
        start,
        end,
        worker,
        pod: at_pod,
    })
}
