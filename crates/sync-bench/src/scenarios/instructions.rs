//! Instructions: what the elector executes for one acquire+release, counted by valgrind's
//! callgrind. A time moves with the machine and its neighbours; an instruction count repeats, so
//! a later change to the request path can be compared with this one.
//!
//! The elector (memory store) runs under callgrind. After a warm-up, the counters are zeroed,
//! one client does acquire+release in a loop, and the counters are dumped: the total divided by
//! the loop's length. `scripts/profile` installs valgrind when it is missing and keeps the dump
//! for `callgrind_annotate`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::Run;
use crate::report::Unit;
use crate::stats::Summary;
use sync_testkit::ElectorProc;

const SYSTEM: &str = "ours/memory";
const FIGURE: &str = "elector instructions per acquire+release";

/// Measures the memory store's elector.
pub fn run(run: &mut Run) -> Result<()> {
    if !installed("valgrind") || !installed("callgrind_control") {
        run.report.missing(
            "instructions",
            SYSTEM,
            FIGURE,
            "valgrind is not installed; scripts/profile installs it and runs this scenario",
        );
        return Ok(());
    }
    let dir = std::env::var_os("SYNC_BENCH_CALLGRIND_DIR")
        .map_or_else(|| sync_testkit::temp_dir("callgrind").keep(), Into::into);
    std::fs::create_dir_all(&dir)?;
    let mut valgrind = Command::new("valgrind");
    valgrind
        .arg("--tool=callgrind")
        .arg(format!(
            "--callgrind-out-file={}",
            dir.join("callgrind.out.%p").display()
        ))
        .arg(&run.elector)
        .args(["--store", "memory"]);
    let elector = ElectorProc::launch(valgrind, "127.0.0.1:0", "bench-callgrind", &[], &[]);
    let client = sync_client::Client::builder().url(&elector.url).build()?;
    let loops = run.pick(200u32, 1_000);
    let lock = client
        .lock("bench-instructions")
        .on_lost(|| eprintln!("bench-instructions lost"));
    let pid = elector.pid().to_string();
    let total = run.runtime.block_on(async {
        for _ in 0..50 {
            lock.acquire().await?.release().await?;
        }
        control(&["--zero", &pid])?;
        for _ in 0..loops {
            lock.acquire().await?.release().await?;
        }
        control(&["--dump", &pid])?;
        anyhow::Ok(())
    });
    total?;
    let instructions = dumped_total(&dir, &pid)?;
    let per = instructions as f64 / f64::from(loops);
    let row = run.report.add(
        "instructions",
        SYSTEM,
        FIGURE,
        Unit::Count,
        Summary::of(&[per]).expect("one"),
    );
    row.note = Some(format!(
        "callgrind's Ir over {loops} loops, each an acquire answered with its event stream, a release, and the first heartbeat; the dump is in {}",
        dir.display()
    ));
    Ok(())
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
