//! The system under test: a store, pods that each run an elector and its workers (in a network
//! namespace of their own when partitions are wanted), and the controls the nemesis pulls.
//!
//! The memory store runs one pod of four workers (it serves one machine); Kubernetes and etcd run
//! three pods of two workers, with a three-member etcd cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use sync_testkit::stores::{Backend, StoreKind, wait_ready};
use sync_testkit::{ElectorProc, EtcdCluster, free_port, signal_pid};

use crate::fence::Admits;
use crate::netns::Netns;
use crate::worker;

/// The name every worker contends for (a lock, a semaphore or a read-write lock).
pub const LOCK: &str = "chaos";

/// An elector and where its workers find it.
pub struct Pod {
    /// The elector's identity (and its Kubernetes client name).
    pub identity: String,
    listen: String,
    url: String,
    elector: Option<ElectorProc>,
    /// The pod's network namespace, when it has one.
    pub netns: Option<Netns>,
}

/// A worker process.
pub struct Worker {
    /// Its number (history file `w<id>.log`).
    pub id: u32,
    /// The pod it belongs to.
    pub pod: usize,
    child: Option<Child>,
}

/// What a run needs to start things.
pub struct Setup<'a> {
    /// The elector binary.
    pub binary: &'a Path,
    /// The lock's ttl in seconds.
    pub ttl: u64,
    /// What the workers contend for.
    pub primitive: Admits,
    /// Where histories and logs go.
    pub dir: &'a Path,
    /// The register's socket.
    pub register: &'a Path,
    /// The run's seed.
    pub seed: u64,
    /// Whether pods get network namespaces (etcd only).
    pub netns: bool,
}

/// The store, the pods and the workers.
pub struct System {
    /// The store.
    pub backend: Backend,
    /// The pods.
    pub pods: Vec<Pod>,
    /// The workers.
    pub workers: Vec<Worker>,
    binary: PathBuf,
    ttl: u64,
    primitive: Admits,
    dir: PathBuf,
    register: PathBuf,
    seed: u64,
}

impl System {
    /// Starts `kind` with its pods and workers.
    pub fn start(
        kind: StoreKind,
        runtime: &tokio::runtime::Runtime,
        setup: &Setup,
    ) -> Result<Self> {
        let (pods, per_pod) = match kind {
            StoreKind::Memory => (1, 4),
            _ => (3, 2),
        };
        let namespaces: Vec<Option<Netns>> = (0..pods)
            .map(|i| {
                (setup.netns && kind == StoreKind::Etcd)
                    .then(|| Netns::create(i as u8))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let backend = if kind == StoreKind::Etcd {
            let hosts: Vec<String> = namespaces
                .iter()
                .flatten()
                .map(|n| n.host_addr.clone())
                .collect();
            Backend::Etcd(EtcdCluster::start_on(3, "chaos", &hosts))
        } else if kind == StoreKind::KubeApiServer {
            Backend::own_kube_apiserver("chaos")
        } else {
            Backend::start_with(kind, runtime, 3)?
        };
        let mut system = Self {
            backend,
            pods: Vec::new(),
            workers: Vec::new(),
            binary: setup.binary.to_owned(),
            ttl: setup.ttl,
            primitive: setup.primitive,
            dir: setup.dir.to_owned(),
            register: setup.register.to_owned(),
            seed: setup.seed,
        };
        for (i, netns) in namespaces.into_iter().enumerate() {
            let listen = match netns {
                Some(_) => "127.0.0.1:13131".to_owned(),
                None => format!("127.0.0.1:{}", free_port()),
            };
            system.pods.push(Pod {
                identity: format!("chaos-pod-{i}"),
                url: format!("http://{listen}"),
                listen,
                elector: None,
                netns,
            });
            system.start_elector(i)?;
        }
        for pod in 0..pods {
            for _ in 0..per_pod {
                let id = system.workers.len() as u32;
                system.workers.push(Worker {
                    id,
                    pod,
                    child: None,
                });
                system.start_worker(id)?;
            }
        }
        Ok(system)
    }

    /// Starts (or restarts, on the same address) pod `i`'s elector.
    pub fn start_elector(&mut self, i: usize) -> Result<()> {
        let pod = &self.pods[i];
        let (mut args, env) = self.backend.elector_args(&pod.identity, self.ttl)?;
        if let (Some(netns), Backend::Etcd(cluster)) = (&pod.netns, &self.backend) {
            let at = args
                .iter()
                .position(|a| a == "--etcd-endpoints")
                .context("etcd flags")?;
            args[at + 1] = cluster.endpoints_on(&netns.host_addr);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let command = match &pod.netns {
            Some(netns) => netns.command(&self.binary),
            None => Command::new(&self.binary),
        };
        let elector = ElectorProc::launch(command, &pod.listen, &pod.identity, &args, &env);
        if pod.netns.is_none() {
            wait_ready(&elector.url, Duration::from_secs(30))?;
        }
        self.pods[i].elector = Some(elector);
        Ok(())
    }

    /// Kills pod `i`'s elector with SIGKILL.
    pub fn kill_elector(&mut self, i: usize) {
        if let Some(mut elector) = self.pods[i].elector.take() {
            elector.signal("KILL");
            elector.wait_exit(Duration::from_secs(10));
        }
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) pod `i`'s elector.
    pub fn pause_elector(&self, i: usize, paused: bool) {
        if let Some(elector) = &self.pods[i].elector {
            elector.signal(if paused { "STOP" } else { "CONT" });
        }
    }

    /// Starts (or restarts) worker `id`.
    pub fn start_worker(&mut self, id: u32) -> Result<()> {
        let exe = std::env::current_exe()?;
        let worker = &self.workers[id as usize];
        let pod = &self.pods[worker.pod];
        let mut command = match &pod.netns {
            Some(netns) => netns.command(&exe),
            None => Command::new(&exe),
        };
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("w{id}.stderr")))?;
        let child = command
            .arg("__worker")
            .env(worker::URL_ENV, &pod.url)
            .env(worker::LOCK_ENV, LOCK)
            .env(worker::REGISTER_ENV, &self.register)
            .env(worker::HISTORY_ENV, self.history(id))
            .env(worker::WORKER_ENV, id.to_string())
            .env(worker::SEED_ENV, self.seed.to_string())
            .env(worker::TTL_ENV, self.ttl.to_string())
            .env(worker::PRIMITIVE_ENV, self.primitive.to_string())
            .env("RUST_LOG", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting worker {id}"))?;
        self.workers[id as usize].child = Some(child);
        Ok(())
    }

    /// Worker `id`'s history file.
    pub fn history(&self, id: u32) -> PathBuf {
        self.dir.join(format!("w{id}.log"))
    }

    /// Kills worker `id` with SIGKILL and reaps it.
    pub fn kill_worker(&mut self, id: u32) {
        if let Some(mut child) = self.workers[id as usize].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) worker `id`.
    pub fn pause_worker(&self, id: u32, paused: bool) {
        if let Some(child) = &self.workers[id as usize].child {
            signal_pid(child.id(), if paused { "STOP" } else { "CONT" });
        }
    }

    /// The pod of worker `id`.
    pub fn pod_of(&self, id: u32) -> usize {
        self.workers[id as usize].pod
    }

    /// Kills every worker, then every elector.
    pub fn stop(&mut self) {
        for id in 0..self.workers.len() as u32 {
            self.pause_worker(id, false);
            self.kill_worker(id);
        }
        for i in 0..self.pods.len() {
            self.pause_elector(i, false);
            self.kill_elector(i);
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.stop();
    }
}
