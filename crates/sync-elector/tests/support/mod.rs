//! Test support: the real elector binary as a child process (from `sync-testkit`), client child
//! processes, and a
//! protected "register" on disk that detects overlapping critical sections.

#![allow(dead_code)]

pub mod scenarios;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // each test file uses some of these
pub use sync_testkit::stores::StoreKind;
#[allow(unused_imports)] // each test file uses some of these
pub use sync_testkit::{ElectorProc, EtcdCluster, signal_pid, temp_dir, wait_child};

/// Starts this package's elector binary as `--listen 127.0.0.1:0 --identity IDENTITY ARGS`, with
/// extra environment, and waits until it says where it listens.
pub fn elector(identity: &str, args: &[&str], env: &[(&str, String)]) -> ElectorProc {
    ElectorProc::spawn(
        Path::new(env!("CARGO_BIN_EXE_sync-elector")),
        identity,
        args,
        env,
    )
}

/// An elector named `identity` on the Kubernetes store in `namespace`, authenticated by
/// `kubeconfig`, with lock ttl `ttl` seconds.
pub fn kube_elector(kubeconfig: &Path, namespace: &str, identity: &str, ttl: u64) -> ElectorProc {
    elector(
        identity,
        &[
            "--store",
            "kubernetes",
            "--namespace",
            namespace,
            "--ttl",
            &format!("{ttl}s"),
        ],
        &[("KUBECONFIG", kubeconfig.display().to_string())],
    )
}

/// The repository's `deploy/` folder.
pub fn deploy_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// A namespace of `plane` with the `deploy/` manifests `files` applied, and a kubeconfig holding
/// only the `sync-elector` ServiceAccount's token, made as `kubectl create token` makes it.
pub fn namespace_with_deploy_rbac(
    plane: &sync_testkit::ControlPlane,
    test: &str,
    files: &[&str],
) -> (String, std::path::PathBuf) {
    let namespace = plane.create_namespace(test);
    for file in files {
        let path = deploy_dir().join(file);
        plane.kubectl_ok(&["apply", "-n", &namespace, "-f", &path.display().to_string()]);
    }
    let token = plane.create_token(&namespace, "sync-elector");
    let kubeconfig = plane.write_token_kubeconfig(&format!("{namespace}-sa"), &token, &namespace);
    (namespace, kubeconfig)
}

/// Polls `check` every 200 ms until it returns `Some`, for up to `within`.
pub fn eventually<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends `method url`, with `body` as JSON text when given, and returns the status and the answer
/// as JSON (`Null` when the answer is not JSON, such as a 204).
pub async fn call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = http.request(method.parse().expect("an HTTP method"), url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// An elector on a store started for it (memory; the Kubernetes API test server; a one-member
/// etcd), for tests that run on every store. The elector stops before its store.
pub struct OnStore {
    /// The elector.
    pub elector: ElectorProc,
    _store: sync_testkit::stores::Backend,
    /// The runtime the store's in-process parts run on; tests may block on it too.
    pub runtime: tokio::runtime::Runtime,
}

impl OnStore {
    /// Starts `kind` and an elector named `identity` on it with ttl `ttl` seconds and `extra`
    /// flags. Call it outside an async runtime (the store gets a runtime of its own).
    pub fn start(
        kind: sync_testkit::stores::StoreKind,
        identity: &str,
        ttl: u64,
        extra: &[&str],
    ) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let store = sync_testkit::stores::Backend::start(kind, &runtime)
            .unwrap_or_else(|e| panic!("the {} store does not start: {e}", kind.name()));
        let binary = Path::new(env!("CARGO_BIN_EXE_sync-elector"));
        let elector = store
            .elector(binary, identity, ttl, extra)
            .unwrap_or_else(|e| panic!("the elector on {} does not start: {e}", kind.name()));
        Self {
            elector,
            _store: store,
            runtime,
        }
    }
}

/// Declares one test per store for `check(kind: StoreKind)`, in a module named after it:
/// `check::memory`, `check::kubernetes` (the API test server), `check::kube_apiserver` (a real
/// one, shared by the test binary, a namespace per test) and `check::etcd`.
#[allow(unused_macros)] // only the tests that run on every store use it
macro_rules! on_every_store {
    ($check:ident) => {
        mod $check {
            use super::support::StoreKind;

            #[test]
            fn memory() {
                super::$check(StoreKind::Memory);
            }

            #[test]
            fn kubernetes() {
                super::$check(StoreKind::Kubernetes);
            }

            #[test]
            fn kube_apiserver() {
                super::$check(StoreKind::KubeApiServer);
            }

            #[test]
            fn etcd() {
                super::$check(StoreKind::Etcd);
            }
        }
    };
}
#[allow(unused_imports)] // only the tests that run on every store use it
pub(crate) use on_every_store;

/// An elector named `proc-elector` with `args`.
pub fn start_elector(args: &[&str]) -> ElectorProc {
    elector("proc-elector", args, &[])
}

/// A client in a process of its own: this test binary run again in a child role (see
/// `child_process` in the test files), speaking in lines that start with `EVENT `.
pub struct ClientProc {
    child: Child,
    lines: Receiver<String>,
}

/// The command that runs this test binary in the child role `role` against the elector at `url`,
/// its stdout piped.
pub fn child_command(role: &str, url: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "child_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SYNC_TEST_ROLE", role)
        .env("SYNC_ELECTOR_URL", url)
        .stdout(Stdio::piped());
    command
}

impl ClientProc {
    /// Starts the child role `role` against the elector at `url`, with extra environment.
    pub fn spawn(role: &str, url: &str, env: &[(&str, String)]) -> Self {
        let mut command = child_command(role, url);
        command.stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the child client starts");
        let (tx, rx) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may print "test child_process ... " before the first event on a line.
                if let Some(at) = line.find("EVENT ") {
                    let _ = tx.send(line[at + "EVENT ".len()..].to_owned());
                }
            }
        });
        Self { child, lines: rx }
    }

    /// The next event line starting with `prefix` within `within`, if any.
    pub fn next(&self, prefix: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Some(line),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// The next event line starting with `prefix`, or a panic after `within`.
    pub fn expect(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no {prefix:?} event from the child within {within:?}"),
            }
        }
    }

    /// Every event line that has arrived and was not read yet.
    pub fn drain(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, within)
    }
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prints one event line for the parent.
pub fn event(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "EVENT {line}").unwrap();
    out.flush().unwrap();
}

/// A critical section over a register on disk: entering creates `inside` exclusively (failing
/// means two holders overlap: recorded in `violations`), appends the token to `tokens`, holds
/// a moment, and leaves.
pub fn critical_section(dir: &Path, token: u64, hold: Duration) {
    let inside = dir.join("inside");
    let entered = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&inside);
    let append = |file: &str, text: String| {
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.join(file))
            .unwrap();
        writeln!(f, "{text}").unwrap();
    };
    if entered.is_err() {
        append(
            "violations",
            format!("token {token} entered while another holder was inside"),
        );
        return;
    }
    append("tokens", token.to_string());
    std::thread::sleep(hold);
    std::fs::remove_file(inside).unwrap();
}

/// The tokens written to the register, in order, and any violations.
pub fn register(dir: &Path) -> (Vec<u64>, Vec<String>) {
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    let tokens = read("tokens").lines().map(|l| l.parse().unwrap()).collect();
    let violations = read("violations").lines().map(str::to_owned).collect();
    (tokens, violations)
}

/// The client roles a child process plays, chosen by `SYNC_TEST_ROLE`, against the elector at
/// `SYNC_ELECTOR_URL`, on lock `SYNC_TEST_LOCK` (default `test`) with ttl `SYNC_TEST_TTL` seconds
/// (default 5). With a lost callback that reports and exits 0, except `hold-without-callback`.
pub fn child_main() {
    let role = std::env::var("SYNC_TEST_ROLE").expect("started by a process test");
    let lock_name = std::env::var("SYNC_TEST_LOCK").unwrap_or_else(|_| "test".into());
    let ttl = std::env::var("SYNC_TEST_TTL").map_or(5, |t| t.parse().unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let started = Instant::now();
        let lock = sync_client::Client::new()
            .lock(lock_name)
            .ttl(Duration::from_secs(ttl))
            .on_lost(move || {
                event(format!(
                    "lost after {:?} at {}",
                    started.elapsed(),
                    sync_testkit::clock::now_ns()
                ));
                std::process::exit(0);
            });
        match role.as_str() {
            "hold" => {
                // As an application would: a store outage is reported, then waited out.
                let guard = loop {
                    match lock.acquire().await {
                        Ok(guard) => break guard,
                        Err(err) => {
                            event(format!("error {err}"));
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                };
                event(format!("acquired {}", guard.fencing_token()));
                std::future::pending::<()>().await;
            }
            "hold-then-release" => {
                let hold: u64 = std::env::var("SYNC_TEST_HOLD_MS").unwrap().parse().unwrap();
                let guard = lock.acquire().await.unwrap();
                event(format!("acquired {}", guard.fencing_token()));
                tokio::time::sleep(Duration::from_millis(hold)).await;
                guard.release().await.unwrap();
                event("released");
                std::future::pending::<()>().await;
            }
            "churn" => {
                // Takes the lock and gives it back, again and again, for random times; each
                // event carries the shared clock (client_go.rs checks them against client-go's).
                let idle: u64 =
                    std::env::var("SYNC_TEST_IDLE_MAX_MS").map_or(800, |v| v.parse().unwrap());
                let mut seed = u64::from(std::process::id()) ^ sync_testkit::clock::now_ns();
                let mut between = move |lo: u64, hi: u64| {
                    seed = seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    Duration::from_millis(lo + (seed >> 33) % (hi - lo))
                };
                loop {
                    let guard = match lock.acquire().await {
                        Ok(guard) => guard,
                        Err(err) => {
                            event(format!("error {err}"));
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    let now = sync_testkit::clock::now_ns();
                    event(format!("acquired {} at {now}", guard.fencing_token()));
                    tokio::time::sleep(between(200, 1500)).await;
                    event(format!("releasing at {}", sync_testkit::clock::now_ns()));
                    let _ = guard.release().await;
                    tokio::time::sleep(between(100, idle)).await;
                }
            }
            "hold-without-callback" => {
                let bare = sync_client::Client::new()
                    .lock("bare")
                    .ttl(Duration::from_secs(ttl));
                let guard = bare.acquire().await.unwrap();
                event(format!("acquired {}", guard.fencing_token()));
                std::future::pending::<()>().await;
            }
            "contend" => {
                let rounds: u32 = std::env::var("SYNC_TEST_ROUNDS").unwrap().parse().unwrap();
                let dir = std::path::PathBuf::from(std::env::var("SYNC_TEST_DIR").unwrap());
                for _ in 0..rounds {
                    let guard = lock.acquire().await.unwrap();
                    critical_section(&dir, guard.fencing_token(), Duration::from_millis(5));
                    guard.release().await.unwrap();
                }
                event("done");
            }
            other => panic!("unknown role {other}"),
        }
    });
}

/// A client process holding `lock` through `elector` (the `hold` role), with lock ttl `ttl`.
pub fn holder(elector: &ElectorProc, lock: &str, ttl: u64) -> ClientProc {
    ClientProc::spawn(
        "hold",
        &elector.url,
        &[
            ("SYNC_TEST_LOCK", lock.to_owned()),
            ("SYNC_TEST_TTL", ttl.to_string()),
        ],
    )
}

/// A client process that takes `lock` through `elector`, holds it `hold_ms` milliseconds and
/// releases it (the `hold-then-release` role).
pub fn releaser(elector: &ElectorProc, lock: &str, hold_ms: u64) -> ClientProc {
    ClientProc::spawn(
        "hold-then-release",
        &elector.url,
        &[
            ("SYNC_TEST_LOCK", lock.to_owned()),
            ("SYNC_TEST_HOLD_MS", hold_ms.to_string()),
        ],
    )
}

/// The fencing token in an `acquired <token>` event.
pub fn token(event: &str) -> u64 {
    event.rsplit(' ').next().unwrap().parse().unwrap()
}

/// How long contending clients may all go without finishing a round before it counts as a
/// stall. A round takes milliseconds; only a waiter that is never woken (or a machine stopped
/// for this long) leaves every client waiting.
const STALL: Duration = Duration::from_secs(30);

/// Runs `clients` contending client processes spread over `electors`, each taking `lock`
/// `rounds` times through the on-disk register, and checks the history: no overlapping critical
/// sections, every round done, tokens strictly increasing. A stall fails with every elector's
/// state dump.
pub fn contend_and_check(electors: &[ElectorProc], lock: &str, clients: usize, rounds: usize) {
    if let Err(stall) = contend(electors, lock, clients, rounds) {
        panic!("{stall}");
    }
}

/// [`contend_and_check`], but a stall is returned, with every elector's state dump, instead
/// of failing the test (the stress run counts them).
pub fn contend(
    electors: &[ElectorProc],
    lock: &str,
    clients: usize,
    rounds: usize,
) -> Result<(), String> {
    let dir = temp_dir(&format!("register-{lock}"));
    let children: Vec<_> = (0..clients)
        .map(|i| {
            ClientProc::spawn(
                "contend",
                &electors[i % electors.len()].url,
                &[
                    ("SYNC_TEST_LOCK", lock.to_owned()),
                    ("SYNC_TEST_ROUNDS", rounds.to_string()),
                    ("SYNC_TEST_DIR", dir.display().to_string()),
                ],
            )
        })
        .collect();
    let mut done = vec![false; clients];
    let (mut finished, mut moved) = (0, Instant::now());
    while done.contains(&false) {
        for (child, done) in children.iter().zip(&mut done) {
            *done = *done || child.next("done", Duration::from_millis(50)).is_some();
        }
        let now_finished = register(&dir).0.len();
        if now_finished > finished {
            (finished, moved) = (now_finished, Instant::now());
        } else if moved.elapsed() > STALL {
            let dumps: Vec<String> = electors
                .iter()
                .map(|e| e.state_dump().unwrap_or_else(|| "(no state dump)".into()))
                .collect();
            return Err(format!(
                "a stall on {lock}: no round finished for {STALL:?}, {finished} of {} done; \
                 the electors' state:\n{}",
                clients * rounds,
                dumps.join("\n")
            ));
        }
    }
    let (tokens, violations) = register(&dir);
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(tokens.len(), clients * rounds);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens not strictly increasing: {tokens:?}"
    );
    Ok(())
}
