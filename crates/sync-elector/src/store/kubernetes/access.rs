//! What the elector's identity may do, asked of the API itself.
//!
//! After any `403 Forbidden`, the store asks the API which of the permissions in
//! `deploy/rbac.yaml` its identity lacks, with SelfSubjectAccessReviews (every authenticated
//! identity may create those). Until they are all back:
//! - `/readyz` fails with a message that names each missing verb, the resource and the namespace;
//! - the log says so once per change, not on every retry;
//! - the check repeats every [`RECHECK`], so restoring a RoleBinding recovers without a restart.
//!
//! A 403 alone is not enough to go on: an open watch keeps delivering events after its
//! RoleBinding is removed, and a role may lack one verb but not the others.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::sleep;
use tracing::{info, warn};

use crate::kube_api::{self, RequestError};

/// Every (API group, resource, verb) the locks need, as `deploy/rbac.yaml` grants them. (Creating
/// Events is granted there too, but a lock works without it: the Event writer logs its failure.)
pub const NEEDED: [(&str, &str, &str); 5] = [
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "list"),
    ("coordination.k8s.io", "leases", "watch"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
];

/// How often a denied elector asks again.
pub const RECHECK: Duration = Duration::from_secs(2);

/// The shared verdict: `Some(message)` while a permission is missing.
#[derive(Default)]
pub struct Access {
    denied: Mutex<Option<String>>,
    check: Notify,
}

impl Access {
    /// The message naming what is missing, while something is.
    pub fn denied(&self) -> Option<String> {
        self.state().clone()
    }

    /// The API answered 403 to `message`: deny at once with it (the API's own message names
    /// the verb, the resource and the namespace), unless a denial is already known (the checker's
    /// fuller message stays, so repeated 403s do not flip the log between the two), and have the
    /// checker find out exactly what is missing and when it is back.
    pub fn forbidden(&self, message: &str) {
        {
            // One lock for the check and the change: a checker's verdict cannot slip in between.
            let mut state = self.state();
            if state.is_none() {
                change(&mut state, Some(message.to_owned()));
            }
        }
        self.check.notify_one();
    }

    fn set(&self, denied: Option<String>) {
        change(&mut self.state(), denied);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.denied.lock().expect("access state poisoned")
    }
}

/// Puts `denied` in `state`, logging when that changes it.
fn change(state: &mut Option<String>, denied: Option<String>) {
    if *state != denied {
        match &denied {
            Some(message) => warn!(%message, "Kubernetes permissions"),
            None => info!("Kubernetes permissions: every permission the elector needs is granted"),
        }
    }
    crate::metrics::store::permission_denied(denied.is_some());
    *state = denied;
}

/// The missing permissions, as one message; `None` when nothing is missing.
pub fn describe_missing(namespace: &str, missing: &[(&str, &str, &str)]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let each: Vec<String> = missing
        .iter()
        .map(|(group, resource, verb)| {
            let resource = if group.is_empty() {
                (*resource).to_owned()
            } else {
                format!("{resource}.{group}")
            };
            format!("{verb} {resource}")
        })
        .collect();
    Some(format!(
        "the elector's Kubernetes identity may not {} in namespace {namespace:?}: bind its \
         service account to the Role in deploy/rbac.yaml",
        each.join(", ")
    ))
}

/// Starts the checker: it sleeps until a 403, then asks every [`RECHECK`] until nothing is
/// missing.
pub fn start(client: kube::Client, namespace: &str, access: Arc<Access>) -> JoinHandle<()> {
    let namespace = namespace.to_owned();
    tokio::spawn(async move {
        let api: Api<SelfSubjectAccessReview> = Api::all(client);
        loop {
            access.check.notified().await;
            loop {
                match missing(&api, &namespace).await {
                    Ok(missing) => {
                        let verdict = describe_missing(&namespace, &missing);
                        let done = verdict.is_none();
                        access.set(verdict);
                        if done {
                            break;
                        }
                    }
                    // The API cannot say; keep the 403's message and ask again.
                    Err(err) => {
                        tracing::debug!(%err, "asking the API for the elector's permissions")
                    }
                }
                sleep(RECHECK).await;
            }
        }
    })
}

async fn missing(
    api: &Api<SelfSubjectAccessReview>,
    namespace: &str,
) -> Result<Vec<(&'static str, &'static str, &'static str)>, RequestError> {
    let mut missing = Vec::new();
    for needed @ (group, resource, verb) in NEEDED {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    verb: Some(verb.into()),
                    namespace: Some(namespace.into()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let answer = kube_api::send(
            "selfsubjectaccessreviews",
            "create",
            api.create(&PostParams::default(), &review),
        )
        .await?;
        if !answer.status.is_some_and(|s| s.allowed) {
            missing.push(needed);
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_each_verb_resource_and_the_namespace() {
        assert_eq!(describe_missing("ns", &[]), None);
        let message = describe_missing(
            "prod",
            &[
                ("coordination.k8s.io", "leases", "update"),
                ("", "events", "create"),
            ],
        )
        .unwrap();
        assert!(
            message.contains(
                "may not update leases.coordination.k8s.io, create events in namespace \"prod\""
            ),
            "{message}"
        );
        assert!(message.contains("deploy/rbac.yaml"));
    }
}
