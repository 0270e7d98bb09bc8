//! The pods of a namespace as the API shows them: readiness, address, and each container's id,
//! start and restarts (the sidecar among the init containers, the program among the containers).

use serde_json::Value;
use sync_testkit::Cluster;

use super::{At, parse_time};

/// One container's status.
#[derive(Debug, Clone, Default)]
pub struct ContainerStatus {
    /// The runtime's id, `containerd://...`.
    pub id: Option<String>,
    /// Whether it runs, and since when.
    pub running_since: Option<At>,
    /// Whether its readiness probe passes (or it has none and runs).
    pub ready: bool,
    /// Whether its startup probe has passed.
    pub started: bool,
    /// How often the kubelet restarted it.
    pub restarts: i64,
}

/// One pod.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Its name.
    pub name: String,
    /// Its address on the pod network.
    pub ip: Option<String>,
    /// Whether the pod is Ready.
    pub ready: bool,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// The `sync-elector` sidecar (an init container that keeps running).
    pub elector: ContainerStatus,
    /// The program (`example`).
    pub program: ContainerStatus,
    /// The pod's spec, as the API stored it.
    pub spec: Value,
}

/// The pods of `namespace` labelled `app.kubernetes.io/name=app`.
pub fn pods(cluster: &Cluster, namespace: &str, app: &str) -> Vec<Pod> {
    let out = cluster.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        namespace,
        "-l",
        &format!("app.kubernetes.io/name={app}"),
        "-o",
        "json",
    ]);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pod| {
            let status = &pod["status"];
            let container = |list: &str, name: &str| {
                status[list]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["name"] == name)
                    .map(|c| ContainerStatus {
                        id: c["containerID"].as_str().map(String::from),
                        running_since: c["state"]["running"]["startedAt"]
                            .as_str()
                            .and_then(parse_time),
                        ready: c["ready"].as_bool().unwrap_or(false),
                        started: c["started"].as_bool().unwrap_or(false),
                        restarts: c["restartCount"].as_i64().unwrap_or(0),
                    })
                    .unwrap_or_default()
            };
            Pod {
                name: pod["metadata"]["name"].as_str().unwrap().to_owned(),
                ip: status["podIP"].as_str().map(String::from),
                ready: status["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True"),
                deleting: pod["metadata"]["deletionTimestamp"].is_string(),
                elector: container("initContainerStatuses", "sync-elector"),
                program: container("containerStatuses", "example"),
                spec: pod["spec"].clone(),
            }
        })
        .collect()
}
