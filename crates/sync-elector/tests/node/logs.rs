//! Every line of every container of a namespace's pods, as `kubectl logs -f --timestamps` gives
//! it, kept after the pod is gone: a follower per container, started as soon as the pod is seen
//! and again after each restart of the container.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sync_testkit::Cluster;

use super::{At, parse_time};

/// One line of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The pod.
    pub pod: String,
    /// The container.
    pub container: String,
    /// When the runtime read it from the container's output.
    pub at: At,
    /// The line.
    pub text: String,
}

/// The lines of a namespace's containers, collected in the background.
pub struct Logs {
    lines: Arc<Mutex<Vec<Line>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Logs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Logs {
    /// Follows `containers` of every pod in `namespace`, from now until dropped.
    pub fn follow(cluster: &'static Cluster, namespace: &str, containers: &[&str]) -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (namespace, containers) = (
            namespace.to_owned(),
            containers
                .iter()
                .map(|c| (*c).to_owned())
                .collect::<Vec<_>>(),
        );
        let (seen_lines, stopped) = (lines.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut followed = HashSet::new();
            while !stopped.load(Ordering::SeqCst) {
                let out = cluster.kubectl(&[
                    "get",
                    "pods",
                    "-n",
                    &namespace,
                    "-o",
                    "jsonpath={.items[*].metadata.name}",
                ]);
                for pod in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    for container in &containers {
                        if followed.insert((pod.to_owned(), container.clone())) {
                            let follower = Follower {
                                cluster,
                                namespace: namespace.clone(),
                                pod: pod.to_owned(),
                                container: container.clone(),
                                lines: seen_lines.clone(),
                                stop: stopped.clone(),
                            };
                            std::thread::spawn(move || follower.run());
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Self { lines, stop }
    }

    /// Every line so far, in time order.
    pub fn lines(&self) -> Vec<Line> {
        let mut lines = self.lines.lock().unwrap().clone();
        lines.sort_by_key(|l| l.at);
        lines
    }

    /// The lines so far that contain `text`.
    pub fn containing(&self, text: &str) -> Vec<Line> {
        self.lines()
            .into_iter()
            .filter(|l| l.text.contains(text))
            .collect()
    }

    /// Waits up to `within` for a line that `matches`, and returns the first.
    pub fn wait_for(&self, within: Duration, what: &str, matches: impl Fn(&Line) -> bool) -> Line {
        super::eventually(within, what, || self.lines().into_iter().find(&matches))
    }
}

/// Follows one container, through its restarts, until its pod is gone.
struct Follower {
    cluster: &'static Cluster,
    namespace: String,
    pod: String,
    container: String,
    lines: Arc<Mutex<Vec<Line>>>,
    stop: Arc<AtomicBool>,
}

impl Follower {
    fn run(self) {
        let plane = self.cluster.plane().admin_kubeconfig().to_owned();
        while !self.stop.load(Ordering::SeqCst) {
            let child = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&plane)
                .args([
                    "logs",
                    "-f",
                    "--timestamps",
                    "-n",
                    &self.namespace,
                    &self.pod,
                    "-c",
                    &self.container,
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn();
            let Ok(mut child) = child else { return };
            let stdout = child.stdout.take().unwrap();
            for text in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Some((stamp, line)) = text.split_once(' ') else {
                    continue;
                };
                let Some(at) = parse_time(stamp) else {
                    continue;
                };
                let line = Line {
                    pod: self.pod.clone(),
                    container: self.container.clone(),
                    at,
                    text: line.to_owned(),
                };
                let mut lines = self.lines.lock().unwrap();
                // A follower started again shows the running container's lines from its start.
                if !lines.contains(&line) {
                    lines.push(line);
                }
                if self.stop.load(Ordering::SeqCst) {
                    break;
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            let exists = self.cluster.kubectl(&[
                "get",
                "pod",
                &self.pod,
                "-n",
                &self.namespace,
                "-o",
                "name",
            ]);
            if !exists.status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
