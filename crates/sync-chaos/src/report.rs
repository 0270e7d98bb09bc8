//! The run's report: one entry per store with its faults and the checker's findings, as JSON and
//! as the markdown that docs/reliability.md keeps.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::checker::Findings;

/// One store's run.
#[derive(Debug, Serialize)]
pub struct StoreRun {
    /// The store.
    pub store: String,
    /// What the workers contended for: `lock`, `semaphore=<n>` or `rwlock`.
    pub primitive: crate::fence::Admits,
    /// Seconds the nemesis ran (from the first fault to the end of the run).
    pub seconds: u64,
    /// The lock's ttl in seconds.
    pub ttl_s: u64,
    /// Pods (electors) and workers.
    pub pods: usize,
    /// Worker processes.
    pub workers: usize,
    /// Whether pods had network namespaces (partitions from etcd).
    pub netns: bool,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Acquire attempts that failed (the elector was down or unreachable).
    pub acquire_errors: u64,
    /// What the checker found.
    pub findings: Findings,
}

/// A whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The machine.
    pub machine: String,
    /// When it started (UTC).
    pub started: String,
    /// The seed of the nemesis and the workers.
    pub seed: u64,
    /// Whether this was a short run (each fault kind once).
    pub short: bool,
    /// One entry per store.
    pub stores: Vec<StoreRun>,
}

impl Report {
    /// Whether every store passed every check.
    pub fn passed(&self) -> bool {
        self.stores.iter().all(|s| s.findings.passed())
    }

    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "Chaos run, {} ({}), seed {}, on {}.\n",
            self.started,
            if self.short {
                "short: each fault once"
            } else {
                "long"
            },
            self.seed,
            self.machine
        );
        md.push_str(
            "| store | seconds | faults | critical sections (released / lost / killed / open) | \
             writes accepted / refused | fencing violations | overlaps (paused / told first; all?) | \
             losses told before the next grant | verdict |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for s in &self.stores {
            let f = &s.findings;
            let n = |k: &str| f.sections.get(k).copied().unwrap_or(0);
            let _ = writeln!(
                md,
                "| {}{} | {} | {} | {} / {} / {} / {} | {} / {} | {} | {} ({} / {}; {}) | {} of {} ({} late while paused) | {} |",
                s.store,
                match s.primitive {
                    crate::fence::Admits::One => String::new(),
                    other => format!(", {other}"),
                },
                s.seconds,
                s.faults.values().sum::<u64>(),
                n("released"),
                n("lost"),
                n("killed"),
                n("open"),
                f.writes_accepted,
                f.writes_refused,
                f.fencing_violations + f.duplicate_tokens + f.overlap_writes_accepted_late,
                f.overlaps,
                f.overlaps_paused,
                f.overlaps_told_first,
                if f.overlaps == f.overlaps_paused + f.overlaps_told_first {
                    "yes"
                } else {
                    "NO"
                },
                f.lost_told_in_time,
                f.lost_told,
                f.lost_told_late_paused,
                if f.passed() { "pass" } else { "FAIL" },
            );
        }
        for s in &self.stores {
            let _ = writeln!(
                md,
                "\n**{}** ({} pods, {} workers, ttl {} s{}; {} failed acquire attempts while \
                 electors were down): longest time with no holder after each fault, counted from \
                 when it healed or the holder went, bound {} ms\n\n| fault | injected | longest \
                 with no holder (ms) |\n|---|---|---|",
                s.store,
                s.pods,
                s.workers,
                s.ttl_s,
                if s.netns {
                    ", pods in network namespaces"
                } else {
                    ""
                },
                s.acquire_errors,
                s.findings.no_holder_bound_ms
            );
            for (kind, count) in &s.faults {
                let gap = s.findings.max_no_holder_ms.get(kind);
                let _ = writeln!(
                    md,
                    "| {kind} | {count} | {} |",
                    gap.map_or("-".to_owned(), |g| g.to_string())
                );
            }
            if let Some(gap) = s.findings.max_no_holder_ms.get("none") {
                let _ = writeln!(md, "| (before any fault) | - | {gap} |");
            }
            let _ = writeln!(
                md,
                "\nLiveness: {} waits; the longest any worker waited while the lock was free or \
                 held only by dead holders, outside faults that stop every waiter: {} ms (bound \
                 {} ms).",
                s.findings.waits, s.findings.max_wait_lock_free_ms, s.findings.no_holder_bound_ms
            );
            for failure in &s.findings.failures {
                let _ = writeln!(md, "\nFAILED: {failure}");
            }
        }
        md
    }

    /// Writes `chaos.json` and `chaos.md` under `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("chaos.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("chaos.md"), self.markdown())?;
        Ok(())
    }
}
