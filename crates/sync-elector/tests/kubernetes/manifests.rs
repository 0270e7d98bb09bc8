//! The manifests in `deploy/`, parsed into Kubernetes types and checked for wiring: RBAC limited to
//! Leases, the service account used by every pod, the sidecar's flags (parsed by the elector's own
//! `Config`), probes on the health port, the pod name from the downward API, and hardening.
//! Schema validation of the same files runs in `.ci/run` (kubernetes-validate).

#![cfg(feature = "kubernetes")]

use std::collections::BTreeSet;
use std::path::Path;

use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
}

/// Every document of a manifest file, as `(apiVersion, kind, yaml)`.
fn documents(file: &str) -> Vec<(String, String, serde_yaml::Value)> {
    let text = std::fs::read_to_string(root().join("deploy").join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            let field = |f: &str| value[f].as_str().unwrap_or_default().to_owned();
            (field("apiVersion"), field("kind"), value)
        })
        .collect()
}

fn parse<T: serde::de::DeserializeOwned>(value: serde_yaml::Value) -> T {
    serde_yaml::from_value(value).unwrap()
}

#[test]
fn rbac_grants_what_the_store_uses_in_the_namespace_and_nothing_else() {
    let docs = documents("rbac.yaml");
    let mut kinds = BTreeSet::new();
    for (api_version, kind, value) in docs {
        kinds.insert(kind.clone());
        match kind.as_str() {
            "ServiceAccount" => {
                assert_eq!(api_version, "v1");
                let sa: ServiceAccount = parse(value);
                assert_eq!(sa.metadata.name.as_deref(), Some("sync-elector"));
            }
            "Role" => {
                assert_eq!(api_version, "rbac.authorization.k8s.io/v1");
                let role: Role = parse(value);
                // Exactly what the store uses (its permission checker's list) and the Event
                // writer's create: a Role broader than needed is a defect.
                let granted = grants(&role);
                let rules = role.rules.unwrap();
                let needed: BTreeSet<(String, String, String)> =
                    sync_elector::store::kubernetes::access::NEEDED
                        .iter()
                        .chain(&[("", "events", "create")])
                        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
                        .collect();
                assert_eq!(granted, needed);
                assert!(
                    rules
                        .iter()
                        .all(|r| r.resource_names.is_none() && r.non_resource_urls.is_none()),
                    "no other kinds of grant"
                );
            }
            "RoleBinding" => {
                let binding: RoleBinding = parse(value);
                assert_eq!(binding.role_ref.kind, "Role");
                assert_eq!(binding.role_ref.name, "sync-elector");
                let subject = &binding.subjects.unwrap()[0];
                assert_eq!(
                    (subject.kind.as_str(), subject.name.as_str()),
                    ("ServiceAccount", "sync-elector")
                );
            }
            other => panic!("unexpected {other} in rbac.yaml"),
        }
    }
    assert_eq!(
        kinds,
        BTreeSet::from(["Role".into(), "RoleBinding".into(), "ServiceAccount".into()])
    );
}

/// Every (group, resource, verb) a Role grants.
fn grants(role: &Role) -> BTreeSet<(String, String, String)> {
    let mut each = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                for v in &rule.verbs {
                    each.insert((g.clone(), r.clone(), v.clone()));
                }
            }
        }
    }
    each
}

#[test]
fn the_leader_service_is_selector_less_and_its_role_grants_only_what_publishing_uses() {
    let docs = documents("leader-service.yaml");
    let kinds: Vec<&str> = docs.iter().map(|(_, kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["Service", "Role", "RoleBinding"]);
    let service: Service = parse(docs[0].2.clone());
    let service_name = service.metadata.name.clone().unwrap();
    let spec = service.spec.unwrap();
    assert_eq!(
        spec.selector, None,
        "Kubernetes must leave its endpoints to us"
    );
    let ports = spec.ports.unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        ports[0].name.as_deref(),
        Some("http"),
        "a named port, as most Services have: the electors mirror it by name"
    );
    let target_port = match &ports[0].target_port {
        Some(IntOrString::Int(port)) => *port,
        other => panic!("a selector-less Service needs a numeric targetPort: {other:?}"),
    };
    let role: Role = parse(docs[1].2.clone());
    let mut expected: BTreeSet<(String, String, String)> = ["get", "create", "update"]
        .iter()
        .map(|v| {
            (
                "discovery.k8s.io".into(),
                "endpointslices".into(),
                v.to_string(),
            )
        })
        .collect();
    expected.insert(("".into(), "services".into(), "get".into()));
    assert_eq!(
        grants(&role),
        expected,
        "no list, watch or delete; nothing else"
    );
    for rule in role.rules.as_ref().unwrap() {
        if rule
            .resources
            .as_ref()
            .unwrap()
            .contains(&"services".to_owned())
        {
            assert_eq!(
                rule.resource_names.as_deref(),
                Some(std::slice::from_ref(&service_name)),
                "Services: only the published one"
            );
        } else {
            assert_eq!(rule.resource_names, None);
        }
    }
    let binding: RoleBinding = parse(docs[2].2.clone());
    assert_eq!(binding.role_ref.name, role.metadata.name.unwrap());
    assert_eq!(binding.subjects.unwrap()[0].name, "sync-elector");

    // The election example publishes its lock's holder to this Service, with POD_IP.
    let (_, _, value) = documents("election.yaml").remove(0);
    let deployment: Deployment = parse(value);
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let program = pod.containers[0].clone();
    let elector = pod.init_containers.unwrap().remove(0);
    let config = sync_elector::Config::try_parse_from(
        std::iter::once("sync-elector".to_owned()).chain(elector.args.clone().unwrap()),
    )
    .unwrap();
    assert_eq!(config.publish.len(), 1);
    assert_eq!(config.publish[0].service, service_name);
    assert_eq!(
        config.publish[0].port, None,
        "the port comes from the Service"
    );
    let env = |container: &Container, name: &str| {
        container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {}", container.name))
    };
    assert_eq!(
        env(&program, "LOCK_NAME").value.as_deref(),
        Some(config.publish[0].lock.as_str()),
        "the program elects on the published lock"
    );
    assert_eq!(
        env(&elector, "POD_IP")
            .value_from
            .unwrap()
            .field_ref
            .unwrap()
            .field_path,
        "status.podIP"
    );
    // The program answers on the Service's target port.
    assert_eq!(
        env(&program, "SERVE").value.unwrap(),
        format!("0.0.0.0:{target_port}")
    );

    // The lock example contends for another lock: the seed's "test". Two programs on one lock
    // would take it from each other, and only one of them publishes it.
    let (_, _, value) = documents("lock.yaml").remove(0);
    let lock: Deployment = parse(value);
    let program = lock
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .remove(0);
    let lock_name = program
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "LOCK_NAME")
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| "test".into());
    assert_ne!(lock_name, config.publish[0].lock.as_str());
}

fn hardened(container: &Container) {
    let name = &container.name;
    let sc = container
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{name}: securityContext"));
    assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
    let requests = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref());
    assert!(
        requests.is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory")),
        "{name}: requests"
    );
}

fn check_deployment(file: &str, name: &str, replicas: i32, program: &str) {
    let docs = documents(file);
    assert_eq!(docs.len(), 1);
    let (api_version, kind, value) = docs.into_iter().next().unwrap();
    assert_eq!(
        (api_version.as_str(), kind.as_str()),
        ("apps/v1", "Deployment"),
        "not the removed extensions/v1beta1"
    );
    let deployment: Deployment = parse(value);
    assert_eq!(deployment.metadata.name.as_deref(), Some(name));
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(replicas));
    let template_labels = spec.template.metadata.unwrap().labels.unwrap();
    for (k, v) in spec.selector.match_labels.unwrap() {
        assert_eq!(
            template_labels.get(&k),
            Some(&v),
            "the selector matches the pods"
        );
    }
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("sync-elector"));
    assert_eq!(
        pod.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );

    let sidecars = pod.init_containers.unwrap();
    let elector = sidecars
        .iter()
        .find(|c| c.name == "sync-elector")
        .expect("the elector sidecar");
    assert_eq!(
        elector.restart_policy.as_deref(),
        Some("Always"),
        "a native sidecar"
    );
    assert!(
        elector
            .image
            .as_deref()
            .unwrap()
            .starts_with("sync-elector:")
    );
    let args = elector.args.clone().unwrap_or_default();
    let config = sync_elector::Config::try_parse_from(
        std::iter::once("sync-elector".to_owned()).chain(args),
    )
    .unwrap_or_else(|e| panic!("{file}: the sidecar's args do not parse: {e}"));
    assert_eq!(config.store, Some(sync_elector::StoreKind::Kubernetes));
    assert!(
        config.listen.ip().is_loopback(),
        "the lock API stays on the pod's loopback"
    );
    let health = config
        .health_listen
        .expect("--health-listen for the probes");
    let port = elector
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some("health"))
        .unwrap();
    assert_eq!(
        port.container_port,
        i32::from(health.port()),
        "the health port matches --health-listen"
    );
    for (probe, path) in [
        (&elector.startup_probe, "/readyz"),
        (&elector.readiness_probe, "/readyz"),
        (&elector.liveness_probe, "/healthz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("an HTTP probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String("health".into()));
    }
    let pod_name = elector
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "POD_NAME")
        .expect("POD_NAME");
    let field = pod_name
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("from the downward API");
    assert_eq!(field.field_path, "metadata.name");
    hardened(elector);

    let app = pod
        .containers
        .iter()
        .find(|c| c.name == "example")
        .expect("the program");
    assert_eq!(app.command.as_deref(), Some(&[format!("/{program}")][..]));
    let dockerfile = std::fs::read_to_string(root().join("examples/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(&format!("/examples/{program} /{program}")),
        "the image has /{program}"
    );
    hardened(app);
}

#[test]
fn the_lock_example_runs_two_replicas_with_the_sidecar() {
    check_deployment("lock.yaml", "lock-example", 2, "lock");
}

#[test]
fn the_election_example_runs_three_replicas_with_the_sidecar() {
    check_deployment("election.yaml", "election-example", 3, "election");
}

#[test]
fn the_elector_image_builds_the_locked_binary_and_runs_as_non_root() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile.elector")).unwrap();
    assert!(dockerfile.contains("cargo build --release --locked -p sync-elector"));
    assert!(dockerfile.contains("USER nonroot"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/sync-elector\"]"));
}
