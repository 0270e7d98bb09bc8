//! The child processes of a run: this binary started again as `sync-bench __worker ROLE`. Each
//! role holds and releases one lock through one system, prints what happened on stdout with a
//! time on the shared clock (`ACQ <ns> <token>`, `REL <ns>`, `LOST <ns>`), and takes orders on
//! stdin: `release` (release, then wait for `acquire` to queue again) and `stop` (release and
//! stay idle). Waiting for `acquire` keeps a releaser from racing the waiter it hands over to.
//!
//! Every role is driven the same way by [`crate::driver`], so the systems are compared under
//! the same harness.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

use sync_testkit::clock::now_ns;

/// The environment variable naming the lock a worker takes.
pub const LOCK_ENV: &str = "BENCH_LOCK";
/// The environment variable giving the ttl in seconds.
pub const TTL_ENV: &str = "BENCH_TTL";
/// The environment variable giving the etcd endpoints (comma-separated) for `v3lock`.
pub const ETCD_ENV: &str = "BENCH_ETCD";
/// The environment variable giving the legacy URL for `original`.
pub const LEGACY_ENV: &str = "BENCH_LEGACY_URL";
/// The environment variable giving the kubeconfig for `lease-manager` and `client-go`; the
/// identity is its user.
pub const KUBECONFIG_ENV: &str = "BENCH_KUBECONFIG";
/// The environment variable giving the Lease's namespace for `client-go`.
pub const NAMESPACE_ENV: &str = "BENCH_NAMESPACE";
/// The environment variable giving client-go's timings for `client-go`: lease duration, renew
/// deadline and retry period, as Go durations (`15s,10s,2s`).
pub const TIMINGS_ENV: &str = "BENCH_CLIENT_GO_TIMINGS";

fn say(line: String) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn var(name: &str) -> Result<String> {
    std::env::var(name)
        .with_context(|| format!("{name} is not set: workers are started by the harness"))
}

fn ttl() -> Result<u64> {
    var(TTL_ENV)?.parse().context("BENCH_TTL is whole seconds")
}

/// Orders from the harness.
enum Order {
    Release,
    Stop,
    Acquire,
}

async fn next_order(stdin: &mut Lines<BufReader<Stdin>>) -> Result<Order> {
    match stdin.next_line().await?.as_deref() {
        Some("release") => Ok(Order::Release),
        Some("stop") => Ok(Order::Stop),
        Some("acquire") => Ok(Order::Acquire),
        Some(other) => bail!("unknown order {other:?}"),
        // The harness went away: so do we.
        None => std::process::exit(0),
    }
}

/// After a release: waits for `acquire`, or forever after `stop`.
async fn queue_again(order: Order, stdin: &mut Lines<BufReader<Stdin>>) -> Result<()> {
    if let Order::Stop = order {
        std::future::pending::<()>().await;
    }
    match next_order(stdin).await? {
        Order::Acquire => Ok(()),
        _ => bail!("after a release only `acquire` makes sense"),
    }
}

/// Runs the worker role `role` until the harness closes stdin or kills it.
pub fn run(role: &str) -> Result<()> {
    if role == "client-go" {
        return client_go();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        match role {
            "ours" => ours(&mut stdin).await,
            "v3lock" => v3lock(&mut stdin).await,
            "original" => original(&mut stdin).await,
            "lease-manager" => lease_manager(&mut stdin).await,
            other => bail!("unknown worker role {other:?}"),
        }
    })
}

/// Our client library, as an application uses it.
async fn ours(stdin: &mut Lines<BufReader<Stdin>>) -> Result<()> {
    let client = sync_client::Client::new();
    let lock = client
        .lock(var(LOCK_ENV)?)
        .ttl(Duration::from_secs(ttl()?))
        .on_lost(|| {
            say(format!("LOST {}", now_ns()));
            std::process::exit(0);
        });
    loop {
        let guard = lock.acquire().await?;
        say(format!("ACQ {} {}", now_ns(), guard.fencing_token()));
        let order = next_order(stdin).await?;
        say(format!("REL {}", now_ns()));
        guard.release().await?;
        queue_again(order, stdin).await?;
    }
}

/// etcd's own lock service (v3lock), as etcd's `concurrency` package uses it: one session lease
/// kept alive for the life of the process, a `Lock` call per acquisition, `Unlock` to release.
async fn v3lock(stdin: &mut Lines<BufReader<Stdin>>) -> Result<()> {
    let endpoints: Vec<String> = var(ETCD_ENV)?.split(',').map(str::to_owned).collect();
    let ttl = ttl()?;
    // No request timeout: a Lock call waits for its turn as long as the holder holds.
    let mut options = etcd_rpc::Options::default();
    options.request_timeout = None;
    let client = etcd_rpc::Client::connect(&endpoints, &options)?;
    let lease = client.lease_grant(ttl as i64).await?.id;
    let mut keeper = client.lease_keep_alive(lease);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(ttl).div_f64(3.0)).await;
            if !matches!(keeper.keep_alive().await, Ok(Some(_))) {
                return;
            }
        }
    });
    let name = var(LOCK_ENV)?;
    loop {
        let locked = client.lock(name.as_bytes(), lease).await?;
        let token = locked.header.map_or(0, |h| h.revision);
        say(format!("ACQ {} {token}", now_ns()));
        let order = next_order(stdin).await?;
        say(format!("REL {}", now_ns()));
        client.unlock(&locked.key).await?;
        queue_again(order, stdin).await?;
    }
}

/// client-go's leader election (`test-deps/client-go-elector --worker`), which speaks this
/// protocol itself: this process becomes it (exec), so that killing the worker kills client-go.
/// Its identity is the kubeconfig's user and this process's id, unique as a pod name would be.
fn client_go() -> Result<()> {
    use std::os::unix::process::CommandExt;
    let kubeconfig = var(KUBECONFIG_ENV)?;
    let timings = var(TIMINGS_ENV)?;
    let [lease_duration, renew_deadline, retry_period] = timings
        .split(',')
        .collect::<Vec<_>>()
        .try_into()
        .map_err(|_| anyhow::anyhow!("{TIMINGS_ENV} is three durations: 15s,10s,2s"))?;
    let identity = format!("{}-{}", kubeconfig_user(&kubeconfig)?, std::process::id());
    let program = sync_testkit::client_go::program();
    let err = std::process::Command::new(&program)
        .args(["--worker", "--kubeconfig", &kubeconfig])
        .args([
            "--namespace",
            &var(NAMESPACE_ENV)?,
            "--lease",
            &var(LOCK_ENV)?,
        ])
        .args(["--identity", &identity])
        .args(["--lease-duration", lease_duration])
        .args(["--renew-deadline", renew_deadline])
        .args(["--retry-period", retry_period])
        .exec();
    Err(err).with_context(|| format!("starting {}", program.display()))
}

/// The first user a kubeconfig names.
fn kubeconfig_user(path: &str) -> Result<String> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    Ok(kubeconfig
        .auth_infos
        .first()
        .map(|a| a.name.clone())
        .unwrap_or_default())
}

/// kube-lease-manager with its default timings (a 30 s lease, renewed 5 s before it ends), in
/// its manual mode: `changed()` kept running while holding, `release()` to let go.
async fn lease_manager(stdin: &mut Lines<BufReader<Stdin>>) -> Result<()> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let path = var(KUBECONFIG_ENV)?;
    let identity = kubeconfig_user(&path)?;
    let kubeconfig = Kubeconfig::read_from(&path)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client, var(LOCK_ENV)?)
        .with_namespace("default")
        .with_identity(identity)
        .build()
        .await?;
    loop {
        while !manager.changed().await? {}
        say(format!("ACQ {} 0", now_ns()));
        let order = loop {
            tokio::select! {
                order = next_order(stdin) => break order?,
                held = manager.changed() => if !held? {
                    say(format!("LOST {}", now_ns()));
                    std::process::exit(0);
                },
            }
        };
        say(format!("REL {}", now_ns()));
        manager.release().await?;
        queue_again(order, stdin).await?;
    }
}

/// The original Metaparticle bindings against the legacy protocol: every 10 s, `GET` the lock
/// then `PUT` it; a `200` to the `PUT` means held. Releasing stops the renewals, as the original
/// `Release()` did: the protocol has no release, so the lock runs out after its ttl.
async fn original(stdin: &mut Lines<BufReader<Stdin>>) -> Result<()> {
    let url = format!("{}/locks/{}", var(LEGACY_ENV)?, var(LOCK_ENV)?);
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut interval = tokio::time::interval(Duration::from_secs(10));
    loop {
        interval.tick().await;
        let _ = http.get(&url).send().await;
        let held = matches!(http.put(&url).send().await, Ok(r) if r.status() == 200);
        if held {
            say(format!("ACQ {} 0", now_ns()));
            // Holding: keep renewing every 10 s until told to stop.
            loop {
                tokio::select! {
                    order = next_order(stdin) => {
                        order?;
                        say(format!("REL {}", now_ns()));
                        std::future::pending::<()>().await;
                    }
                    _ = interval.tick() => {
                        let _ = http.get(&url).send().await;
                        let renewed = matches!(http.put(&url).send().await, Ok(r) if r.status() == 200);
                        if !renewed {
                            say(format!("LOST {}", now_ns()));
                            std::process::exit(0);
                        }
                    }
                }
            }
        }
    }
}
