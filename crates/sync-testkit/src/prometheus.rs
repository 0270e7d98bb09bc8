//! A real Prometheus (Debian's `prometheus`, which `scripts/install-test-deps` installs) that
//! scrapes the targets a test names every second, evaluates rule files every second, and answers
//! queries and the state of its alerts over its HTTP API, on a loopback port of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::{Proc, TempDir, free_port, temp_dir};

/// One scrape target: `host:port`, and the labels its series get (as a Kubernetes service
/// discovery would add `namespace` and `pod`).
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`, serving `/metrics`.
    pub address: String,
    /// Labels added to every series scraped from it.
    pub labels: BTreeMap<String, String>,
}

impl Target {
    /// `address` (an `http://host:port` URL or `host:port`), labelled `namespace` and `pod`.
    pub fn pod(address: &str, namespace: &str, pod: &str) -> Self {
        let address = address.trim_start_matches("http://").trim_end_matches('/');
        Self {
            address: address.to_owned(),
            labels: BTreeMap::from([
                ("namespace".to_owned(), namespace.to_owned()),
                ("pod".to_owned(), pod.to_owned()),
            ]),
        }
    }
}

/// An alert as Prometheus reports it.
#[derive(Debug, Clone)]
pub struct Alert {
    /// Its name.
    pub name: String,
    /// `pending` or `firing`.
    pub state: String,
    /// Its labels, the alert's name among them.
    pub labels: BTreeMap<String, String>,
}

/// A running Prometheus.
pub struct Prometheus {
    _proc: Proc,
    port: u16,
    dir: TempDir,
}

/// The Prometheus binary, with what to run when it is missing.
fn binary() -> PathBuf {
    let path = PathBuf::from("prometheus");
    assert!(
        Command::new(&path).arg("--version").output().is_ok(),
        "prometheus is not installed: run scripts/install-test-deps (it installs Debian's prometheus package)"
    );
    path
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (job `sync-elector`) with `rule_files` loaded, and
    /// waits until it is ready.
    pub fn start(test: &str, targets: &[Target], rule_files: &[&Path]) -> Self {
        let dir = temp_dir(&format!("prometheus-{test}"));
        let port = free_port();
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_text(targets, rule_files)).unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-lifecycle")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let prometheus = Self {
            _proc: Proc::new(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while crate::http::get(&format!("{}/-/ready", prometheus.url()))
            .map(|(status, _)| status)
            .ok()
            != Some(200)
        {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 60 s:\n{}",
                prometheus.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The result of the instant query `expr` now: one JSON object per series (`metric` and
    /// `value`).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let data = self.api(&format!("query?query={}", encode(expr)))?;
        match data["result"].as_array() {
            Some(result) => Ok(result.clone()),
            None => bail!("query {expr:?} answered no result list: {data}"),
        }
    }

    /// The range query `expr` from `start` to `end` (Unix seconds) every `step` seconds: one JSON
    /// object per series (`metric` and `values`).
    pub fn query_range(&self, expr: &str, start: f64, end: f64, step: f64) -> Result<Vec<Value>> {
        let data = self.api(&format!(
            "query_range?query={}&start={start:.3}&end={end:.3}&step={step}",
            encode(expr)
        ))?;
        match data["result"].as_array() {
            Some(result) => Ok(result.clone()),
            None => bail!("range query {expr:?} answered no result list: {data}"),
        }
    }

    /// Every pending or firing alert.
    pub fn alerts(&self) -> Result<Vec<Alert>> {
        let data = self.api("alerts")?;
        let alerts = data["alerts"]
            .as_array()
            .ok_or_else(|| anyhow!("no alert list: {data}"))?;
        Ok(alerts
            .iter()
            .map(|alert| {
                let labels: BTreeMap<String, String> = alert["labels"]
                    .as_object()
                    .map(|l| {
                        l.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                Alert {
                    name: labels.get("alertname").cloned().unwrap_or_default(),
                    state: alert["state"].as_str().unwrap_or_default().to_owned(),
                    labels,
                }
            })
            .collect())
    }

    /// Whether every target is scraped and up.
    pub fn targets_up(&self) -> Result<bool> {
        let data = self.api("targets")?;
        let active = data["activeTargets"]
            .as_array()
            .ok_or_else(|| anyhow!("no target list: {data}"))?;
        Ok(!active.is_empty() && active.iter().all(|t| t["health"] == "up"))
    }

    fn api(&self, path: &str) -> Result<Value> {
        let url = format!("{}/api/v1/{path}", self.url());
        let (status, body) = crate::http::get(&url)?;
        let answer: Value = serde_json::from_str(&body)
            .with_context(|| format!("{url} answered {status}: {body}"))?;
        if answer["status"] != "success" {
            bail!("{url} answered {status}: {body}");
        }
        Ok(answer["data"].clone())
    }
}

/// The configuration: one job, every target with its labels, scraped and evaluated every second.
fn config_text(targets: &[Target], rule_files: &[&Path]) -> String {
    let mut text = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
    );
    text.push_str("rule_files:\n");
    for file in rule_files {
        text.push_str(&format!("  - {:?}\n", file.display().to_string()));
    }
    if rule_files.is_empty() {
        text.push_str("  []\n");
    }
    text.push_str("scrape_configs:\n  - job_name: sync-elector\n    static_configs:\n");
    for target in targets {
        text.push_str(&format!(
            "      - targets: [{:?}]\n        labels:\n",
            target.address
        ));
        for (key, value) in &target.labels {
            text.push_str(&format!("          {key}: {value:?}\n"));
        }
    }
    if targets.is_empty() {
        text.push_str("      []\n");
    }
    text
}

/// `text` percent-encoded for a URL's query.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_encoded_and_targets_carry_their_labels() {
        assert_eq!(encode("up{job=\"a b\"}"), "up%7Bjob%3D%22a%20b%22%7D");
        let config = config_text(
            &[Target::pod("http://127.0.0.1:9/", "ns", "a")],
            &[Path::new("/r.yaml")],
        );
        assert!(config.contains("- targets: [\"127.0.0.1:9\"]"), "{config}");
        assert!(config.contains("namespace: \"ns\""), "{config}");
        assert!(config.contains("- \"/r.yaml\""), "{config}");
    }
}

/// One panel of the Grafana dashboard, its queries as Grafana sends them.
#[derive(Debug, Clone)]
pub struct DashboardPanel {
    /// The panel's title.
    pub title: String,
    /// The unit of its values (`fieldConfig.defaults.unit`), as written.
    pub unit: Value,
    /// Its queries: the expression as sent, and the legend format as written.
    pub targets: Vec<(String, Value)>,
}

/// The panels of the dashboard at `path` (deploy/monitoring/src/sync-elector-dashboard.json),
/// their queries as Grafana sends them: `$namespace` set to `namespace`, and `$__rate_interval`
/// (which Grafana makes at least four scrape intervals) to `rate_interval`.
pub fn dashboard(path: &Path, namespace: &str, rate_interval: &str) -> Result<Vec<DashboardPanel>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let dashboard: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let panels = dashboard["panels"]
        .as_array()
        .ok_or_else(|| anyhow!("{} has no panels", path.display()))?;
    panels
        .iter()
        .map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            let targets = panel["targets"]
                .as_array()
                .ok_or_else(|| anyhow!("panel {title:?} has no targets"))?
                .iter()
                .map(|target| {
                    let expr = target["expr"]
                        .as_str()
                        .ok_or_else(|| anyhow!("a target of panel {title:?} has no expr"))?
                        .replace("$namespace", namespace)
                        .replace("$__rate_interval", rate_interval);
                    Ok((expr, target["legendFormat"].clone()))
                })
                .collect::<Result<_>>()?;
            Ok(DashboardPanel {
                unit: panel["fieldConfig"]["defaults"]["unit"].clone(),
                title,
                targets,
            })
        })
        .collect()
}
