//! Every version of one Lease, as `kubectl get leases -w` delivers them, stamped when they
//! arrive: who held it, and from when, on the one clock.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sync_testkit::{Cluster, Proc};

use super::{At, now};

/// One version of the Lease.
#[derive(Debug, Clone)]
pub struct Version {
    /// When the watch delivered it.
    pub at: At,
    /// The holder's pod: `holderIdentity` up to its `/` (`None`: released or free).
    pub pod: Option<String>,
    /// The whole `holderIdentity`.
    pub holder: String,
    /// `leaseTransitions`.
    pub transitions: i64,
}

/// A watch of one Lease, from before it exists.
pub struct LeaseWatch {
    seen: Arc<Mutex<Vec<Version>>>,
    _kubectl: Proc,
}

impl LeaseWatch {
    /// Watches Lease `name` in `namespace`.
    pub fn start(cluster: &Cluster, namespace: &str, name: &str) -> Self {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(cluster.plane().admin_kubeconfig())
            .args([
                "get",
                "leases",
                "-n",
                namespace,
                "--field-selector",
                &format!("metadata.name={name}"),
                "-w",
                "--output-watch-events",
                "-o",
                "json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl runs");
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        std::thread::spawn(move || {
            let events =
                serde_json::Deserializer::from_reader(stdout).into_iter::<serde_json::Value>();
            for event in events.map_while(Result::ok) {
                let at = now();
                let spec = &event["object"]["spec"];
                let holder = spec["holderIdentity"].as_str().unwrap_or("").to_owned();
                let deleted = event["type"] == "DELETED";
                let version = Version {
                    at,
                    pod: (!holder.is_empty() && !deleted)
                        .then(|| holder.split('/').next().unwrap_or("").to_owned()),
                    holder,
                    transitions: spec["leaseTransitions"].as_i64().unwrap_or(0),
                };
                recorded.lock().unwrap().push(version);
            }
        });
        Self {
            seen,
            _kubectl: Proc::new(child),
        }
    }

    /// Every version so far.
    pub fn versions(&self) -> Vec<Version> {
        self.seen.lock().unwrap().clone()
    }

    /// The holder's pod now, as far as the watch has seen.
    pub fn pod(&self) -> Option<String> {
        self.versions().last().and_then(|v| v.pod.clone())
    }

    /// Waits up to `within` for a version whose holder's pod passes `matches`, and returns it.
    pub fn wait_for(
        &self,
        within: Duration,
        what: &str,
        matches: impl Fn(Option<&str>) -> bool,
    ) -> Version {
        super::eventually(within, what, || {
            self.versions()
                .last()
                .filter(|v| matches(v.pod.as_deref()))
                .cloned()
        })
    }

    /// The holdings in order: each holder (its pod) that held it, from the version that named it
    /// to the version that named another holder or nobody (`None` while it still holds).
    pub fn holdings(&self) -> Vec<(String, At, Option<At>)> {
        let mut holdings: Vec<(String, At, Option<At>)> = Vec::new();
        let mut holding: Option<String> = None;
        for version in self.versions() {
            let holder = version.pod.as_ref().map(|_| version.holder.clone());
            if holder == holding {
                continue;
            }
            if holding.is_some()
                && let Some(last) = holdings.last_mut()
            {
                last.2 = Some(version.at);
            }
            if let Some(pod) = &version.pod {
                holdings.push((pod.clone(), version.at, None));
            }
            holding = holder;
        }
        holdings
    }
}
