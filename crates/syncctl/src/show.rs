//! Reading locks: `syncctl locks` (every lock), `syncctl get NAME` (one), and `syncctl watch
//! NAME` (one line per change, until Ctrl-C), as a table that lines up or as JSON or YAML.

use std::time::Duration;

use futures_util::StreamExt;
use sync_client::{Client, LockState};

use crate::exit::{self, Exit};

/// How to print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Columns that line up, as kubectl prints them.
    #[default]
    Table,
    /// JSON: an array for `locks`, an object for `get`, one object per line for `watch`.
    Json,
    /// YAML: a list for `locks`, a mapping for `get`, one document per change for `watch`.
    Yaml,
}

/// `syncctl locks`.
pub async fn locks(client: &Client, output: Output) -> Exit {
    match client.locks().await {
        Ok(locks) => print(&locks, output, &locks),
        Err(err) => crate::client_error(err),
    }
}

/// `syncctl get NAME`.
pub async fn get(client: &Client, name: &str, output: Output) -> Exit {
    match client.lock_state(name).await {
        Ok(state) => print(&state, output, std::slice::from_ref(&state)),
        Err(err) => crate::client_error(err),
    }
}

/// `syncctl watch NAME`: the state now, then a line per change, until SIGINT or SIGTERM, or the
/// elector ends the stream.
pub async fn watch(client: &Client, name: &str, output: Output) -> Exit {
    let mut signals = match crate::run::Signals::listen() {
        Ok(signals) => signals,
        Err(exit) => return exit,
    };
    let mut states = match client.watch(name).await {
        Ok(states) => states,
        Err(err) => return crate::client_error(err),
    };
    if output == Output::Table {
        crate::emit(&format!("{}\n", lines(&[], true, Widths::Fixed).remove(0)));
    }
    loop {
        tokio::select! {
            state = states.next() => match state {
                Some(Ok(state)) => {
                    let text = match output {
                        Output::Table => {
                            lines(std::slice::from_ref(&state), false, Widths::Fixed).remove(0)
                        }
                        Output::Json => serde_json::to_string(&state).unwrap_or_default(),
                        Output::Yaml => format!("---\n{}", yaml(&state).trim_end()),
                    };
                    crate::emit(&format!("{text}\n"));
                }
                Some(Err(err)) => return crate::client_error(err),
                None => return Exit::fail(exit::FAILURE, "the elector ended the watch (it is shutting down)"),
            },
            _ = signals.recv() => return Exit::quiet(0),
        }
    }
}

/// Prints `value` as JSON or YAML, or `rows` as a table.
fn print(value: &impl serde::Serialize, output: Output, rows: &[LockState]) -> Exit {
    match output {
        Output::Table => {
            for line in lines(rows, true, Widths::Fit) {
                crate::emit(&format!("{line}\n"));
            }
        }
        Output::Json => crate::emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(value).unwrap_or_default()
        )),
        Output::Yaml => crate::emit(&yaml(value)),
    }
    Exit::quiet(0)
}

fn yaml(value: &impl serde::Serialize) -> String {
    serde_yaml::to_string(value).unwrap_or_default()
}

/// How wide the table's columns are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Widths {
    /// As wide as each column's widest cell.
    Fit,
    /// Fixed, for `watch`, whose later lines are not known yet.
    Fixed,
}

/// The table's lines: a header (when `header`), then one line per lock.
fn lines(rows: &[LockState], header: bool, widths: Widths) -> Vec<String> {
    let mut cells: Vec<[String; 7]> = Vec::new();
    if header {
        cells.push(
            [
                "NAME",
                "HOLDER",
                "TOKEN",
                "HELD FOR",
                "EXPIRES IN",
                "WAITERS",
                "VALUE",
            ]
            .map(String::from),
        );
    }
    let none = || "<none>".to_owned();
    for state in rows {
        // A semaphore's or read-write lock's row shows its oldest holder and how many more,
        // as `kubectl get leases` shows its Lease, and when the first of them runs out.
        let (holder, expires_in_ms, value) = match state.holders.as_slice() {
            [] => (
                state.holder.clone(),
                state.expires_in_ms,
                state.value.clone(),
            ),
            [first, rest @ ..] => (
                Some(match rest.len() {
                    0 => first.holder.clone(),
                    more => format!("{} (+{more})", first.holder),
                }),
                state.holders.iter().map(|h| h.expires_in_ms).min(),
                first.value.clone(),
            ),
        };
        cells.push([
            state.name.clone(),
            holder.unwrap_or_else(none),
            state.token.to_string(),
            state.held_for_ms.map(held_for).unwrap_or_else(none),
            expires_in_ms
                .map(|ms| format!("{:.1}s", Duration::from_millis(ms).as_secs_f64()))
                .unwrap_or_else(none),
            state.waiters.to_string(),
            value.unwrap_or_else(none),
        ]);
    }
    let fixed = [20, 28, 18, 10, 10, 7, 0];
    let width: Vec<usize> = (0..7)
        .map(|c| {
            if widths == Widths::Fit {
                cells
                    .iter()
                    .map(|row| row[c].chars().count())
                    .max()
                    .unwrap_or(0)
            } else {
                fixed[c]
            }
        })
        .collect();
    cells
        .iter()
        .map(|row| {
            row.iter()
                .zip(&width)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect::<Vec<_>>()
                .join("   ")
                .trim_end()
                .to_owned()
        })
        .collect()
}

/// A holding's age as kubectl prints ages: `42s`, `5m3s`, `2h10m`, `3d4h`.
fn held_for(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m{}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h{}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3_600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(name: &str, holder: Option<&str>) -> LockState {
        LockState {
            name: name.into(),
            holder: holder.map(str::to_owned),
            value: None,
            token: 7,
            expires_in_ms: holder.map(|_| 14_200),
            held_for_ms: holder.map(|_| 303_000),
            waiters: 2,
            kind: sync_client::NameKind::Lock,
            permits: None,
            holders: Vec::new(),
        }
    }

    #[test]
    fn columns_line_up() {
        let table = lines(
            &[state("a", Some("pod-1/s1")), state("longer-name", None)],
            true,
            Widths::Fit,
        );
        assert_eq!(table.len(), 3);
        let holder_at = table[0].find("HOLDER").unwrap();
        assert_eq!(table[1].find("pod-1/s1"), Some(holder_at));
        assert_eq!(table[2].find("<none>"), Some(holder_at));
        assert!(table[1].contains("14.2s") && table[1].contains("5m3s"));
        assert_eq!(held_for(59_999), "59s");
        assert_eq!(held_for(7_260_000), "2h1m");
    }

    #[test]
    fn a_semaphore_shows_its_oldest_holder_how_many_more_and_the_first_to_run_out() {
        let holder = |name: &str, permit, expires_in_ms| sync_client::HolderState {
            holder: name.into(),
            value: Some(format!("{name}:8080")),
            token: 7,
            permit: Some(permit),
            mode: None,
            expires_in_ms,
        };
        let semaphore = LockState {
            kind: sync_client::NameKind::Semaphore,
            permits: Some(3),
            holders: vec![holder("pod-1/s1", 0, 14_200), holder("pod-2/s2", 1, 9_100)],
            ..state("jobs", None)
        };
        let table = lines(&[semaphore], false, Widths::Fit);
        assert!(table[0].contains("pod-1/s1 (+1)"), "{}", table[0]);
        assert!(table[0].contains("9.1s"), "{}", table[0]);
        assert!(table[0].contains("pod-1/s1:8080"), "{}", table[0]);
    }
}
