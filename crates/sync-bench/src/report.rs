//! The results of a run: one row per figure, printed as a markdown table and written as JSON.

use std::path::Path;

use serde::Serialize;

use crate::stats::Summary;

/// What a row's numbers count.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Seconds (printed as µs, ms or s).
    Seconds,
    /// Operations per second.
    OpsPerSecond,
    /// Mebibytes.
    #[serde(rename = "mib")]
    MiB,
    /// Kibibytes.
    #[serde(rename = "kib")]
    KiB,
    /// Requests per minute.
    PerMinute,
    /// A plain ratio.
    Ratio,
    /// A count of things.
    Count,
}

/// One figure for one system in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The scenario, such as `handover`.
    pub scenario: String,
    /// What was measured: `ours/memory`, `etcd v3lock`, …
    pub system: String,
    /// The figure, such as `release to next acquire`.
    pub figure: String,
    /// The unit of `median`, `p99`, `min` and `max`.
    pub unit: Unit,
    /// Samples.
    pub n: usize,
    /// The median.
    pub median: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// The goal this figure is held against, if any.
    pub goal: Option<String>,
    /// A remark: settings, or why the figure is missing.
    pub note: Option<String>,
}

/// Every row of a run, with where and when it ran.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The machine: CPU model, cores, memory, kernel.
    pub machine: String,
    /// When the run started (UTC, RFC 3339).
    pub started: String,
    /// Whether this was a `--quick` run.
    pub quick: bool,
    /// The rows in the order measured.
    pub rows: Vec<Row>,
}

impl Report {
    /// Adds a row from a summary, and prints it as it lands.
    pub fn add(
        &mut self,
        scenario: &str,
        system: &str,
        figure: &str,
        unit: Unit,
        summary: Summary,
    ) -> &mut Row {
        let row = Row {
            scenario: scenario.into(),
            system: system.into(),
            figure: figure.into(),
            unit,
            n: summary.n,
            median: summary.median,
            p99: summary.p99,
            min: summary.min,
            max: summary.max,
            goal: None,
            note: None,
        };
        eprintln!("  {}", markdown_row(&row));
        self.rows.push(row);
        self.rows.last_mut().unwrap()
    }

    /// Adds a row for a figure that was not measured, saying why.
    pub fn missing(&mut self, scenario: &str, system: &str, figure: &str, why: &str) {
        let row = Row {
            scenario: scenario.into(),
            system: system.into(),
            figure: figure.into(),
            unit: Unit::Ratio,
            n: 0,
            median: f64::NAN,
            p99: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
            goal: None,
            note: Some(why.into()),
        };
        eprintln!("  {}", markdown_row(&row));
        self.rows.push(row);
    }

    /// The whole report as a markdown table.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Run {} on {}{}.\n\n| scenario | system | figure | median | p99 | n | goal | note |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
            self.started,
            self.machine,
            if self.quick { " (--quick)" } else { "" }
        );
        for row in &self.rows {
            out.push_str(&markdown_row(row));
            out.push('\n');
        }
        out
    }

    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(format!("{name}.json")), json)?;
        std::fs::write(dir.join(format!("{name}.md")), self.markdown())
    }
}

fn markdown_row(row: &Row) -> String {
    let (median, p99) = if row.n == 0 {
        ("-".to_owned(), "-".to_owned())
    } else {
        (
            format_value(row.median, row.unit),
            format_value(row.p99, row.unit),
        )
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} |",
        row.scenario,
        row.system,
        row.figure,
        median,
        p99,
        row.n,
        row.goal.as_deref().unwrap_or(""),
        row.note.as_deref().unwrap_or("")
    )
}

/// A value in its unit, readably: `35 µs`, `4.3 ms`, `3.21 s`, `21,500/s`, `9.8 MiB`.
pub fn format_value(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Seconds if value < 1e-3 => format!("{:.0} µs", value * 1e6),
        Unit::Seconds if value < 1.0 => format!("{:.2} ms", value * 1e3),
        Unit::Seconds => format!("{value:.2} s"),
        Unit::OpsPerSecond => format!("{}/s", thousands(value)),
        Unit::MiB => format!("{value:.1} MiB"),
        Unit::KiB => format!("{} KiB", thousands(value)),
        Unit::PerMinute => format!("{value:.1}/min"),
        Unit::Ratio => format!("{value:.2}x"),
        Unit::Count => format!("{value:.0}"),
    }
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_in_readable_units() {
        assert_eq!(format_value(35e-6, Unit::Seconds), "35 µs");
        assert_eq!(format_value(0.0043, Unit::Seconds), "4.30 ms");
        assert_eq!(format_value(3.214, Unit::Seconds), "3.21 s");
        assert_eq!(format_value(21500.4, Unit::OpsPerSecond), "21,500/s");
        assert_eq!(format_value(9.84, Unit::MiB), "9.8 MiB");
        assert_eq!(format_value(1234.4, Unit::KiB), "1,234 KiB");
    }
}
