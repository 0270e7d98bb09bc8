//! Reads the workers' history files into critical sections (who held the lock with which token,
//! from when to when, how it ended, and when the worker was told it had lost it) and waits (from
//! asking for the lock to getting it, failing, or being killed).

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::fence::Grant;

/// How a critical section ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ending {
    /// The worker finished and released.
    Released,
    /// The worker saw the loss and stopped.
    Lost,
    /// The worker was killed (`kill -9`) while holding.
    Killed,
    /// Still held when the run ended.
    Open,
}

/// One critical section of one worker.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// The worker.
    pub worker: u32,
    /// Its fencing token.
    pub token: u64,
    /// What it held: the lock, a permit, shared or exclusive.
    pub grant: Grant,
    /// When the grant reached the worker.
    pub acq: u64,
    /// When the worker left the section (released, stopped, was killed, or the run ended).
    pub end: u64,
    /// How it ended.
    pub ending: Ending,
    /// When the client library told the worker the lock was lost, if it did.
    pub told: Option<u64>,
}

/// One wait of one worker for the lock.
#[derive(Debug, Clone, Serialize)]
pub struct Wait {
    /// The worker.
    pub worker: u32,
    /// When it asked.
    pub from: u64,
    /// When the wait ended: granted, failed, killed, or the end of the run.
    pub to: u64,
}

/// A worker's sections and waits, and how many acquire attempts failed.
#[derive(Debug, Default)]
pub struct WorkerHistory {
    /// The sections, in order.
    pub sections: Vec<Section>,
    /// The waits, in order.
    pub waits: Vec<Wait>,
    /// Failed acquire attempts (`ERR` lines).
    pub errors: u64,
}

/// Parses worker `worker`'s history file. `kills` are the times the worker was killed; a section
/// open at a restart ended at the last kill before it. Sections open at `run_end` end there, and
/// lines after it are not part of the run.
pub fn read(path: &Path, worker: u32, kills: &[u64], run_end: u64) -> Result<WorkerHistory> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the history {}", path.display()))?;
    Ok(parse(&text, worker, kills, run_end))
}

/// Parses the text of a history file (see [`read`]).
pub fn parse(text: &str, worker: u32, kills: &[u64], run_end: u64) -> WorkerHistory {
    let mut history = WorkerHistory::default();
    let mut open: Option<Section> = None;
    let mut waiting: Option<u64> = None;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(kind), Some(Ok(at))) = (parts.next(), parts.next().map(str::parse::<u64>)) else {
            continue; // a line cut short by a kill
        };
        if at > run_end {
            break;
        }
        let mut close = |open: &mut Option<Section>, end: u64, ending: Ending| {
            if let Some(mut section) = open.take() {
                section.end = end;
                section.ending = ending;
                history.sections.push(section);
            }
        };
        let mut stop_waiting = |to: u64| {
            if let Some(from) = waiting.take() {
                history.waits.push(Wait { worker, from, to });
            }
        };
        match kind {
            "START" => {
                let killed = kills
                    .iter()
                    .copied()
                    .filter(|k| *k <= at)
                    .max()
                    .unwrap_or(at);
                stop_waiting(killed);
                close(&mut open, killed, Ending::Killed);
            }
            "WAIT" => {
                stop_waiting(at);
                waiting = Some(at);
            }
            "ACQ" => {
                let Some(Ok(token)) = parts.next().map(str::parse) else {
                    continue;
                };
                // Older histories name no grant: a lock's.
                let Ok(grant) = parts.next().map_or(Ok(Grant::Lock), str::parse) else {
                    continue;
                };
                stop_waiting(at);
                close(&mut open, at, Ending::Lost);
                open = Some(Section {
                    worker,
                    token,
                    grant,
                    acq: at,
                    end: at,
                    ending: Ending::Open,
                    told: None,
                });
            }
            "REL" => close(&mut open, at, Ending::Released),
            "END" => close(&mut open, at, Ending::Lost),
            "LOST" => {
                // The callback's line can land after the worker's own END: it belongs to the
                // latest section that began before it.
                let target = match open.as_mut() {
                    Some(section) => Some(section),
                    None => history.sections.iter_mut().rev().find(|s| s.acq <= at),
                };
                if let Some(section) = target {
                    section.told = Some(section.told.map_or(at, |t| t.min(at)));
                }
            }
            "ERR" => {
                stop_waiting(at);
                history.errors += 1;
            }
            _ => {}
        }
    }
    if let Some(mut section) = open {
        section.end = run_end;
        history.sections.push(section);
    }
    if let Some(from) = waiting {
        history.waits.push(Wait {
            worker,
            from,
            to: run_end,
        });
    }
    history
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_end_by_release_loss_kill_or_the_run() {
        let text = "START 1 9\nACQ 10 5\nREL 20\nACQ 30 7 permit=1\nLOST 41 x\nEND 40\nERR 45 down\n\
                    ACQ 50 9 shared\nSTART 70 10\nACQ 80 11 exclusive\nRE\nREL 120\nACQ 130 12\n";
        let h = parse(text, 3, &[60], 100);
        let got: Vec<(u64, Grant, u64, u64, Ending, Option<u64>)> = h
            .sections
            .iter()
            .map(|s| (s.token, s.grant, s.acq, s.end, s.ending, s.told))
            .collect();
        assert_eq!(
            got,
            vec![
                (5, Grant::Lock, 10, 20, Ending::Released, None),
                (7, Grant::Permit(1), 30, 40, Ending::Lost, Some(41)),
                (9, Grant::Shared, 50, 60, Ending::Killed, None),
                (11, Grant::Exclusive, 80, 100, Ending::Open, None),
            ]
        );
        assert_eq!(h.errors, 1);
    }

    #[test]
    fn waits_end_by_grant_error_kill_or_the_run() {
        let text = "START 1 9\nWAIT 2\nACQ 10 5\nREL 20\nWAIT 21\nERR 25 down\nWAIT 26\n\
                    START 70 10\nWAIT 71\n";
        let h = parse(text, 3, &[60], 100);
        let got: Vec<(u64, u64)> = h.waits.iter().map(|w| (w.from, w.to)).collect();
        assert_eq!(got, vec![(2, 10), (21, 25), (26, 60), (71, 100)]);
    }
}
