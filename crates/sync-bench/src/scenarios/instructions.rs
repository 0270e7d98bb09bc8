//! Instructions: what the elector executes for one acquire+release, counted by valgrind's
//! callgrind, and what the floor's bare axum handler executes for one request. A time moves with
//! the machine and its neighbours; an instruction count repeats, so a later change to the request
//! path can be compared with this one, and the elector with the least a server can do.
//!
//! Each server runs under callgrind. After a warm-up, the counters are zeroed, one client loops,
//! and the counters are dumped: the total divided by the loop's length. `scripts/profile`
//! installs valgrind when it is missing and keeps the dumps for `callgrind_annotate`.
//!
//! The other side of the loop is counted the same way: our client library, in a process of its
//! own (`sync-bench __client`) under callgrind, against an elector run plainly. An
//! acquire+release costs both, and on one machine both share its cores.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::Run;
use crate::report::Unit;
use crate::stats::Summary;
use sync_testkit::ElectorProc;

const SYSTEM: &str = "ours/memory";
const FIGURE: &str = "elector instructions per acquire+release";
const FLOOR_SYSTEM: &str = "loopback HTTP";
const FLOOR_FIGURE: &str = "floor server instructions per request";
const CLIENT_FIGURE: &str = "client instructions per acquire+release";

/// Measures the memory store's elector and the floor's server.
pub fn run(run: &mut Run) -> Result<()> {
    if !installed("valgrind") || !installed("callgrind_control") {
        for (system, figure) in [
            (SYSTEM, FIGURE),
            (FLOOR_SYSTEM, FLOOR_FIGURE),
            (SYSTEM, CLIENT_FIGURE),
        ] {
            run.report.missing(
                "instructions",
                system,
                figure,
                "valgrind is not installed; scripts/profile installs it and runs this scenario",
            );
        }
        return Ok(());
    }
    let dir = std::env::var_os("SYNC_BENCH_CALLGRIND_DIR")
        .map_or_else(|| sync_testkit::temp_dir("callgrind").keep(), Into::into);
    let (elector_dir, floor_dir, client_dir) =
        (dir.join("elector"), dir.join("floor"), dir.join("client"));
    for dir in [&elector_dir, &floor_dir, &client_dir] {
        std::fs::create_dir_all(dir)?;
    }
    let loops = run.pick(200u32, 1_000);
    let elector = elector(run, &elector_dir, loops)?;
    let floor = floor(run, &floor_dir, loops)?;
    let client = client(run, &client_dir, loops)?;
    let row = run.report.add(
        "instructions",
        SYSTEM,
        FIGURE,
        Unit::Count,
        Summary::of(&[elector]).expect("one"),
    );
    row.note = Some(format!(
        "callgrind's Ir over {loops} loops, each an acquire answered with its event stream, and a release; the dumps are in {}",
        dir.display()
    ));
    run.report
        .add(
            "instructions",
            FLOOR_SYSTEM,
            FLOOR_FIGURE,
            Unit::Count,
            Summary::of(&[floor]).expect("one"),
        )
        .note = Some(format!(
        "callgrind's Ir over {loops} GETs from reqwest (HTTP/2, as sync-client) to the floor's bare axum handler"
    ));
    let row = run.report.add(
        "instructions",
        SYSTEM,
        "acquire+release / two floor requests",
        Unit::Ratio,
        Summary::of(&[elector / (2.0 * floor)]).expect("one"),
    );
    row.goal = Some("at most 3x".into());
    row.note = Some(
        "an acquire+release is two requests; the floor's are the least a server can do".into(),
    );
    run.report
        .add(
            "instructions",
            SYSTEM,
            CLIENT_FIGURE,
            Unit::Count,
            Summary::of(&[client]).expect("one"),
        )
        .note = Some(format!(
        "callgrind's Ir over {loops} loops of sync-client's Lock (acquire, then release of the guard) in a process of its own, its runtime's threads included, against an elector run plainly"
    ));
    Ok(())
}

/// The elector's instructions per acquire+release.
fn elector(run: &mut Run, dir: &Path, loops: u32) -> Result<f64> {
    let mut valgrind = callgrind(dir);
    valgrind.arg(&run.elector).args(["--store", "memory"]);
    let elector = ElectorProc::launch(valgrind, "127.0.0.1:0", "bench-callgrind", &[], &[]);
    let client = sync_client::Client::builder().url(&elector.url).build()?;
    let lock = client
        .lock("bench-instructions")
        .on_lost(|| eprintln!("bench-instructions lost"));
    let pid = elector.pid().to_string();
    run.runtime.block_on(count(dir, &pid, loops, async || {
        lock.acquire().await?.release().await?;
        Ok(())
    }))
}

/// The floor server's instructions per request.
fn floor(run: &mut Run, dir: &Path, loops: u32) -> Result<f64> {
    let mut valgrind = callgrind(dir);
    let mut child = valgrind
        .arg(std::env::current_exe()?)
        .arg("__floor")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the floor server under valgrind")?;
    let pid = child.id().to_string();
    let mut addr = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut addr)?;
    let url = format!("http://{}/", addr.trim());
    let http = super::floor::http()?;
    let counted = run.runtime.block_on(count(dir, &pid, loops, async || {
        http.get(&url).send().await?.error_for_status()?;
        Ok(())
    }));
    let _ = child.kill();
    let _ = child.wait();
    counted
}

/// Our client's instructions per acquire+release: `sync-bench __client URL` under callgrind.
fn client(run: &mut Run, dir: &Path, loops: u32) -> Result<f64> {
    let mut plain = Command::new(&run.elector);
    plain.args(["--store", "memory"]);
    let elector = ElectorProc::launch(plain, "127.0.0.1:0", "bench-client-callgrind", &[], &[]);
    let mut child = callgrind(dir)
        .arg(std::env::current_exe()?)
        .args(["__client", &elector.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the client loop under valgrind")?;
    let pid = child.id().to_string();
    let counted = (|| {
        let mut said = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut told = child.stdin.take().expect("piped");
        let mut expect = |word: &str| match said.next() {
            Some(Ok(line)) if line == word => Ok(()),
            other => bail!("the client loop said {other:?}, not {word:?}"),
        };
        expect("warm")?;
        control(&["--zero", &pid])?;
        writeln!(told, "{loops}")?;
        expect("done")?;
        control(&["--dump", &pid])?;
        Ok(dumped_total(dir, &pid)? as f64 / f64::from(loops))
    })();
    let _ = child.kill();
    let _ = child.wait();
    counted
}

/// The child of [`client`]: 50 loops of our client's Lock against the elector at `url`, `warm`
/// on stdout, then as many loops as the next line of stdin says, and `done`; it stays until
/// killed, so that its counters can be dumped.
pub fn client_loop(url: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = sync_client::Client::builder().url(url).build()?;
        let lock = client
            .lock("bench-client-instructions")
            .on_lost(|| eprintln!("bench-client-instructions lost"));
        for _ in 0..50 {
            lock.acquire().await?.release().await?;
        }
        println!("warm");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let loops: u32 = line.trim().parse().context("the number of loops")?;
        for _ in 0..loops {
            lock.acquire().await?.release().await?;
        }
        println!("done");
        std::future::pending::<Result<()>>().await
    })
}

/// Runs `one` 50 times to warm up, zeroes process `pid`'s counters, runs it `loops` times and
/// dumps them: the instructions per run of `one`.
async fn count(
    dir: &Path,
    pid: &str,
    loops: u32,
    mut one: impl AsyncFnMut() -> Result<()>,
) -> Result<f64> {
    for _ in 0..50 {
        one().await?;
    }
    control(&["--zero", pid])?;
    for _ in 0..loops {
        one().await?;
    }
    control(&["--dump", pid])?;
    Ok(dumped_total(dir, pid)? as f64 / f64::from(loops))
}

/// valgrind running callgrind, its dumps in `dir`.
fn callgrind(dir: &Path) -> Command {
    let mut valgrind = Command::new("valgrind");
    valgrind.arg("--tool=callgrind").arg(format!(
        "--callgrind-out-file={}",
        dir.join("callgrind.out.%p").display()
    ));
    valgrind
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stdout.is_empty())
}

fn control(args: &[&str]) -> Result<()> {
    let output = Command::new("callgrind_control")
        .args(args)
        .output()
        .context("running callgrind_control")?;
    if !output.status.success() {
        bail!(
            "callgrind_control {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The instruction total of the newest dump of process `pid` in `dir` (its `summary:` line).
fn dumped_total(dir: &Path, pid: &str) -> Result<u64> {
    let prefix = format!("callgrind.out.{pid}.");
    let newest = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| {
            e.file_name()
                .to_string_lossy()
                .rsplit('.')
                .next()
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0)
        })
        .with_context(|| format!("no callgrind dump of {pid} in {}", dir.display()))?;
    let text = std::fs::read_to_string(newest.path())?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no summary line in {}", newest.path().display()))
}
