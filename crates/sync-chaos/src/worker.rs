//! A worker process: this binary started again with `__worker`. It loops on one name like a
//! careful application: acquire (the lock, a semaphore's permit, or a read-write lock, shared
//! two times in three), write `(worker, token, seq, grant)` to the register while the guard says
//! it is held (checking before each write), release, and again. Everything it sees goes, one
//! line per event with the shared clock's time, to its history file, which survives `kill -9`:
//!
//! - `START <t> <pid>`: the process started;
//! - `WAIT <t>`: it asks for the lock;
//! - `ACQ <t> <token> <grant>`: the lock was granted (`lock`, `permit=<n>`, `shared` or
//!   `exclusive`);
//! - `REL <t>`: done with the critical section, releasing;
//! - `LOST <t> <reason>`: the client library said the lock was lost (from its callback);
//! - `END <t>`: the worker saw the loss and left its critical section without releasing;
//! - `ERR <t> <message>`: an acquire failed (for example, the elector was down).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sync_client::{Client, Mode};
use sync_testkit::clock::now_ns;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::fence::{Admits, Grant};
use crate::rng::Rng;

/// What a worker needs, passed in its environment.
pub const URL_ENV: &str = "SYNC_CHAOS_URL";
/// The lock every worker contends for.
pub const LOCK_ENV: &str = "SYNC_CHAOS_LOCK";
/// The register's socket.
pub const REGISTER_ENV: &str = "SYNC_CHAOS_REGISTER";
/// The history file.
pub const HISTORY_ENV: &str = "SYNC_CHAOS_HISTORY";
/// The worker's number.
pub const WORKER_ENV: &str = "SYNC_CHAOS_WORKER";
/// The seed of its hold times.
pub const SEED_ENV: &str = "SYNC_CHAOS_SEED";
/// The lock's ttl in seconds.
pub const TTL_ENV: &str = "SYNC_CHAOS_TTL";
/// The primitive: `lock`, `semaphore=<n>` or `rwlock` ([`Admits`]).
pub const PRIMITIVE_ENV: &str = "SYNC_CHAOS_PRIMITIVE";

/// How a critical section writes: `(writes, shortest and longest pause between them in ms)`.
/// Half the sections are brief, as most work under a lock is; the other half hold for up to two
/// ttls, so that faults often strike a holder in the middle of its work.
fn shape(rng: &mut Rng, ttl: Duration) -> (u64, u64, u64) {
    if rng.below(2) == 0 {
        (3, 5, 40)
    } else {
        let span = rng.millis(300, 2 * ttl.as_millis() as u64);
        (span.as_millis() as u64 / 150 + 1, 100, 200)
    }
}

/// A history file, appended one whole line at a time.
#[derive(Clone)]
struct History(Arc<File>);

impl History {
    fn line(&self, kind: &str, rest: &str) {
        let line = format!("{kind} {} {rest}\n", now_ns());
        // One write per line on an O_APPEND file: a kill leaves whole lines behind.
        let _ = (&*self.0).write_all(line.as_bytes());
    }
}

fn env(name: &str) -> Result<String> {
    std::env::var(name)
        .with_context(|| format!("{name} is not set: workers are started by the harness"))
}

/// The worker's main loop; runs until the harness kills it.
pub fn run() -> Result<()> {
    let url = env(URL_ENV)?;
    let lock = env(LOCK_ENV)?;
    let register = env(REGISTER_ENV)?;
    let worker: u32 = env(WORKER_ENV)?.parse()?;
    let seed: u64 = env(SEED_ENV)?.parse()?;
    let ttl = Duration::from_secs(env(TTL_ENV)?.parse()?);
    let primitive: Admits = env(PRIMITIVE_ENV)?.parse().map_err(anyhow::Error::msg)?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(env(HISTORY_ENV)?)?;
    let history = History(Arc::new(file));
    history.line("START", &std::process::id().to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let contender = Contender {
        name: lock,
        primitive,
        worker,
        ttl,
    };
    runtime.block_on(contend(url, register, seed, contender, history))
}

/// Who contends for what.
struct Contender {
    name: String,
    primitive: Admits,
    worker: u32,
    ttl: Duration,
}

impl Contender {
    /// The handle for the next section: a read-write lock's writer one time in three.
    fn handle(&self, client: &Client, rng: &mut Rng) -> sync_client::Lock {
        match self.primitive {
            Admits::One => client.lock(&self.name),
            Admits::Permits(n) => client.semaphore(&self.name, n),
            Admits::SharedOrExclusive if rng.below(3) == 0 => {
                client.rwlock(&self.name, Mode::Exclusive)
            }
            Admits::SharedOrExclusive => client.rwlock(&self.name, Mode::Shared),
        }
    }
}

/// What a guard holds, as the register and the history write it.
fn grant_of(guard: &sync_client::LockGuard) -> Grant {
    match (guard.permit(), guard.mode()) {
        (Some(permit), _) => Grant::Permit(permit),
        (None, Some(Mode::Shared)) => Grant::Shared,
        (None, Some(Mode::Exclusive)) => Grant::Exclusive,
        (None, None) => Grant::Lock,
    }
}

async fn contend(
    url: String,
    register: String,
    seed: u64,
    contender: Contender,
    history: History,
) -> Result<()> {
    let (worker, ttl) = (contender.worker, contender.ttl);
    let client = Client::builder().url(url).build()?;
    let stream = UnixStream::connect(&register)
        .await
        .with_context(|| format!("connecting to the register at {register}"))?;
    let (read, mut write) = stream.into_split();
    let mut answers = BufReader::new(read).lines();
    let mut rng = Rng::new(seed ^ u64::from(worker).wrapping_mul(0x9e37_79b9));
    loop {
        let told = history.clone();
        let lock = contender
            .handle(&client, &mut rng)
            .ttl(ttl)
            .on_lost(move || told.line("LOST", "the client library said so"));
        history.line("WAIT", "");
        let guard = match lock.acquire().await {
            Ok(guard) => guard,
            Err(err) => {
                history.line("ERR", &err.to_string().replace('\n', " "));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (token, grant) = (guard.fencing_token(), grant_of(&guard));
        history.line("ACQ", &format!("{token} {grant}"));
        let (writes, low, high) = shape(&mut rng, ttl);
        for seq in 1..=writes {
            if !guard.is_held() {
                break;
            }
            write
                .write_all(format!("WRITE {worker} {token} {seq} {grant}\n").as_bytes())
                .await?;
            let Some(answer) = answers.next_line().await? else {
                bail!("the register closed its socket");
            };
            if answer.starts_with("ERROR") {
                bail!("the register refused our line: {answer}");
            }
            tokio::time::sleep(rng.millis(low, high)).await;
        }
        if guard.is_held() {
            history.line("REL", "");
            let _ = guard.release().await;
        } else {
            history.line("END", "");
        }
        tokio::time::sleep(rng.millis(0, 10)).await;
    }
}
