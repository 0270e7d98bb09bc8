//! The process's own series, read from `/proc/self` at each scrape under the names every
//! Prometheus client uses (`process_resident_memory_bytes`, `process_cpu_seconds_total`, ...),
//! so the usual dashboards and alerts work unchanged. Where `/proc` is missing (not Linux), the
//! series are left out.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The clock ticks per second of `/proc/<pid>/stat`'s times: Linux's `USER_HZ`, 100 on every
/// architecture it reports to user space with.
const USER_HZ: f64 = 100.0;

/// Collects the process series at each scrape.
#[derive(Debug)]
pub struct Process {
    /// When the elector started, in seconds since the Unix epoch.
    started: f64,
}

impl Process {
    /// Series for this process, which started now.
    pub fn new() -> Self {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self { started }
    }
}

/// What `/proc/self` says now.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    resident_bytes: f64,
    virtual_bytes: f64,
    cpu_seconds: f64,
    threads: f64,
    open_fds: f64,
    max_fds: Option<f64>,
}

/// The `kB` figure of `key` in `/proc/self/status`, in bytes.
fn status_bytes(status: &str, key: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024.0)
}

/// User plus system time and the thread count from `/proc/self/stat`. The command name in
/// parentheses may hold spaces, so fields are counted from the last `)`.
fn stat_fields(stat: &str) -> Option<(f64, f64)> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), so field N is at index N - 3.
    let ticks = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    Some(((ticks(14)? + ticks(15)?) / USER_HZ, ticks(20)?))
}

/// The soft limit on open files from `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn sample() -> Option<Sample> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (cpu_seconds, threads) = stat_fields(&stat)?;
    Some(Sample {
        resident_bytes: status_bytes(&status, "VmRSS:")?,
        virtual_bytes: status_bytes(&status, "VmSize:")?,
        cpu_seconds,
        threads,
        open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as f64,
        max_fds: std::fs::read_to_string("/proc/self/limits")
            .ok()
            .as_deref()
            .and_then(max_open_files),
    })
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> std::fmt::Result {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(now) = sample() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(now.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let e = &mut encoder;
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory, in bytes",
            now.resident_bytes,
        )?;
        gauge(
            e,
            "process_virtual_memory_bytes",
            "Virtual memory, in bytes",
            now.virtual_bytes,
        )?;
        gauge(e, "process_open_fds", "Open file descriptors", now.open_fds)?;
        if let Some(max) = now.max_fds {
            gauge(
                e,
                "process_max_fds",
                "The limit on open file descriptors",
                max,
            )?;
        }
        gauge(
            e,
            "process_threads",
            "Operating system threads",
            now.threads,
        )?;
        gauge(
            e,
            "process_start_time_seconds",
            "When the process started, in seconds since the Unix epoch",
            self.started,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_as_linux_writes_them() {
        let status = "Name:\tsync-elector\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_bytes(status, "VmRSS:"), Some(2048.0 * 1024.0));
        assert_eq!(status_bytes(status, "VmSize:"), Some(123_456.0 * 1024.0));
        assert_eq!(status_bytes(status, "VmSwap:"), None);
        // A command name with a space and a parenthesis, then state, ppid, ... utime (14),
        // stime (15), ..., num_threads (20).
        let stat = "42 (sync (elector) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000";
        assert_eq!(stat_fields(stat), Some((3.0, 7.0)));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1048576              1048576              files\n";
        assert_eq!(max_open_files(limits), Some(1_048_576.0));
    }

    #[test]
    fn this_process_has_memory_threads_and_files() {
        let now = sample().expect("/proc/self is readable on Linux");
        assert!(now.resident_bytes > 0.0 && now.virtual_bytes >= now.resident_bytes);
        assert!(now.threads >= 1.0 && now.open_fds >= 3.0, "{now:?}");
    }
}
