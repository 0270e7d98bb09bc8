//! The object store: Leases by namespace and name, one resourceVersion counter for everything (as
//! etcd's revision is), and a bounded history of changes for watches to resume from.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::patch::{self, Owners, PatchKind};
use crate::status::ApiError;

/// One change, as a watch reports it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion the change created.
    pub rv: u64,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The namespace of the object.
    pub namespace: String,
    /// The object after the change (before it, for `DELETED`, with the delete's resourceVersion).
    pub object: Value,
}

/// Every Lease, and the changes a watch can still see.
pub struct Objects {
    rv: u64,
    objects: BTreeMap<(String, String), Value>,
    history: VecDeque<Change>,
    history_limit: usize,
    /// The oldest resourceVersion a watch may resume from.
    oldest: u64,
    namespaces: BTreeSet<String>,
    changes: broadcast::Sender<Change>,
    /// Field ownership per object, for server-side apply.
    owners: BTreeMap<(String, String), Owners>,
}

/// The field manager of requests that name none.
const UNNAMED_MANAGER: &str = "unknown";

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Checks what the real API server's validation checks for a Lease, as far as this server goes.
fn validate(
    object: &Value,
    url_namespace: &str,
    url_name: Option<&str>,
) -> Result<String, ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request(
            "the body is not a JSON object".into(),
        ));
    }
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !api_version.is_empty() && api_version != "coordination.k8s.io/v1"
        || !kind.is_empty() && kind != "Lease"
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) and kind ({kind}) do not match coordination.k8s.io/v1 Lease"
        )));
    }
    if let Some(ns) = meta_str(object, "namespace")
        && ns != url_namespace
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        ));
    }
    let name = meta_str(object, "name").unwrap_or_default().to_owned();
    if let Some(url_name) = url_name
        && name != url_name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({url_name})"
        )));
    }
    if name.is_empty() {
        return Err(ApiError::invalid(
            "",
            "metadata.name: Required value: name or generateName is required".into(),
        ));
    }
    if !is_dns_subdomain(&name) {
        return Err(ApiError::invalid(
            &name,
            "metadata.name: Invalid value: a lowercase RFC 1123 subdomain is required".into(),
        ));
    }
    if let Some(d) = object
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_i64)
        && d <= 0
    {
        return Err(ApiError::invalid(
            &name,
            "spec.leaseDurationSeconds: Invalid value: must be greater than 0".into(),
        ));
    }
    Ok(name)
}

/// `current` with `patch` merged in, keeping the current resourceVersion so that the update
/// that stores it is a compare-and-set against what was patched.
fn merged(current: &Value, patch: &Value) -> Value {
    let mut next = current.clone();
    patch::merge(&mut next, patch);
    next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    next
}

impl Objects {
    /// An empty store with the namespace `default`, keeping `history_limit` changes for watches.
    pub fn new(history_limit: usize) -> Self {
        Self {
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit,
            oldest: 1,
            namespaces: BTreeSet::from(["default".to_owned()]),
            changes: broadcast::channel(4096).0,
            owners: BTreeMap::new(),
        }
    }

    /// Adds a namespace.
    pub fn add_namespace(&mut self, namespace: &str) {
        self.namespaces.insert(namespace.to_owned());
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch may still resume from.
    pub fn oldest_resumable(&self) -> u64 {
        self.oldest
    }

    /// Forgets the watch history, as etcd compaction does: older watches get 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest = self.rv;
    }

    /// A receiver of every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// The retained changes after `rv` in `namespace`.
    pub fn changes_since(&self, namespace: &str, rv: u64) -> Vec<Change> {
        self.history
            .iter()
            .filter(|c| c.rv > rv && c.namespace == namespace)
            .cloned()
            .collect()
    }

    fn record(&mut self, kind: &'static str, namespace: &str, object: Value) {
        let change = Change {
            rv: self.rv,
            kind,
            namespace: namespace.to_owned(),
            object,
        };
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.oldest = old.rv;
            }
        }
        let _ = self.changes.send(change);
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    /// One Lease.
    pub fn get(&self, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(name))
    }

    /// Every Lease in `namespace`, in name order.
    pub fn list(&self, namespace: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Creates a Lease; server-set metadata is filled in.
    pub fn create(&mut self, namespace: &str, mut object: Value) -> Result<Value, ApiError> {
        if !self.namespaces.contains(namespace) {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("namespaces \"{namespace}\" not found"),
                Some(namespace),
            ));
        }
        let name = validate(&object, namespace, None)?;
        if meta_str(&object, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created".into(),
            ));
        }
        let key = (namespace.to_owned(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&name));
        }
        let rv = self.next_rv();
        object["apiVersion"] = json!("coordination.k8s.io/v1");
        object["kind"] = json!("Lease");
        let meta = object["metadata"]
            .as_object_mut()
            .expect("validated: metadata.name exists");
        meta.insert("namespace".into(), json!(namespace));
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("resourceVersion".into(), json!(rv));
        meta.insert(
            "creationTimestamp".into(),
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
        let mut owners = Owners::default();
        owners.updated(UNNAMED_MANAGER, &Value::Null, &object);
        self.owners.insert(key.clone(), owners);
        self.objects.insert(key, object.clone());
        self.record("ADDED", namespace, object.clone());
        Ok(object)
    }

    /// `PUT` of a Lease, as the real API server answers it: a Lease that does not exist is created
    /// (Leases allow create-on-update; `true` says it was), and one that exists needs the
    /// resourceVersion it is replacing (Leases do not allow unconditional updates: 422 without it,
    /// 409 Conflict when it is not the current one).
    pub fn put(
        &mut self,
        namespace: &str,
        name: &str,
        mut object: Value,
    ) -> Result<(Value, bool), ApiError> {
        validate(&object, namespace, Some(name))?;
        if !self
            .objects
            .contains_key(&(namespace.to_owned(), name.to_owned()))
        {
            if let Some(meta) = object["metadata"].as_object_mut() {
                meta.remove("resourceVersion");
            }
            return Ok((self.create(namespace, object)?, true));
        }
        if meta_str(&object, "resourceVersion").is_none_or(str::is_empty) {
            return Err(ApiError::invalid(
                name,
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
                    .into(),
            ));
        }
        Ok((self.update(namespace, name, object)?, false))
    }

    /// Replaces a Lease. A resourceVersion in the body must match (else 409 Conflict); an
    /// update that changes nothing keeps the resourceVersion, as the real server does.
    pub fn update(
        &mut self,
        namespace: &str,
        name: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        validate(&object, namespace, Some(name))?;
        let key = (namespace.to_owned(), name.to_owned());
        let current = self
            .objects
            .get(&key)
            .ok_or_else(|| ApiError::not_found(name))?
            .clone();
        let current_rv = meta_str(&current, "resourceVersion")
            .unwrap_or_default()
            .to_owned();
        match meta_str(&object, "resourceVersion") {
            Some(rv) if !rv.is_empty() && rv != current_rv => return Err(ApiError::conflict(name)),
            _ => {}
        }
        object["apiVersion"] = json!("coordination.k8s.io/v1");
        object["kind"] = json!("Lease");
        let meta = object["metadata"]
            .as_object_mut()
            .expect("validated: metadata.name exists");
        for field in ["uid", "creationTimestamp"] {
            meta.insert(field.into(), current["metadata"][field].clone());
        }
        meta.insert("namespace".into(), json!(namespace));
        meta.insert("resourceVersion".into(), json!(current_rv));
        if object == current {
            return Ok(current);
        }
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv);
        self.owners
            .entry(key.clone())
            .or_default()
            .updated(UNNAMED_MANAGER, &current, &object);
        self.objects.insert(key, object.clone());
        self.record("MODIFIED", namespace, object.clone());
        Ok(object)
    }

    /// Patches a Lease. A merge patch needs the Lease to exist, and a resourceVersion in it must
    /// match; its manager then owns the fields it changed. An apply (which needs `manager`)
    /// creates the Lease when missing, and is `409 Conflict` when it would change a field that
    /// another manager owns, unless `force`; its manager then owns every field it applied.
    pub fn patch(
        &mut self,
        namespace: &str,
        name: &str,
        kind: PatchKind,
        body: Value,
        manager: Option<&str>,
        force: bool,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "a patch must be a JSON object".into(),
            ));
        }
        let key = (namespace.to_owned(), name.to_owned());
        let current = self.objects.get(&key).cloned();
        let manager_name = manager.unwrap_or(UNNAMED_MANAGER).to_owned();
        let result = match (kind, current) {
            (PatchKind::Merge, None) => return Err(ApiError::not_found(name)),
            (PatchKind::Merge, Some(current)) => {
                if let Some(rv) = meta_str(&body, "resourceVersion")
                    && Some(rv) != meta_str(&current, "resourceVersion")
                {
                    return Err(ApiError::conflict(name));
                }
                let result = self.update(namespace, name, merged(&current, &body))?;
                self.owners
                    .entry(key)
                    .or_default()
                    .updated(&manager_name, &current, &result);
                result
            }
            (PatchKind::Apply, _) if manager.is_none() => {
                return Err(ApiError::bad_request(
                    "PATCH with apply requires a fieldManager parameter".into(),
                ));
            }
            (PatchKind::Apply, None) => {
                let mut object = body.clone();
                object["metadata"]["name"] = json!(name);
                let result = self.create(namespace, object)?;
                self.owners
                    .entry(key)
                    .or_default()
                    .applied(&manager_name, &body, &result);
                result
            }
            (PatchKind::Apply, Some(current)) => {
                let owners = self.owners.get(&key).cloned().unwrap_or_default();
                let conflicts = owners.conflicts(&manager_name, &current, &body);
                if !conflicts.is_empty() && !force {
                    let list = conflicts
                        .iter()
                        .map(|(field, owner)| format!("conflict with \"{owner}\": .{field}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!("Apply failed with {} conflict(s): {list}", conflicts.len()),
                        Some(name),
                    ));
                }
                let result = self.update(namespace, name, merged(&current, &body))?;
                self.owners
                    .entry(key)
                    .or_default()
                    .applied(&manager_name, &body, &result);
                result
            }
        };
        Ok(result)
    }

    /// Deletes a Lease, if `precondition_rv` (when given) still matches.
    pub fn delete(
        &mut self,
        namespace: &str,
        name: &str,
        precondition_rv: Option<&str>,
    ) -> Result<Value, ApiError> {
        let key = (namespace.to_owned(), name.to_owned());
        let current = self
            .objects
            .get(&key)
            .ok_or_else(|| ApiError::not_found(name))?;
        if let Some(rv) = precondition_rv
            && meta_str(current, "resourceVersion") != Some(rv)
        {
            return Err(ApiError::conflict(name));
        }
        let mut gone = self.objects.remove(&key).expect("checked above");
        self.owners.remove(&key);
        let rv = self.next_rv();
        gone["metadata"]["resourceVersion"] = json!(rv);
        self.record("DELETED", namespace, gone.clone());
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(name: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
               "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})
    }

    #[test]
    fn put_creates_a_missing_lease_and_needs_a_version_for_an_existing_one() {
        let mut o = Objects::new(10);
        let mut stale = lease("x");
        stale["metadata"]["resourceVersion"] = json!("5");
        let (created, was_created) = o.put("default", "x", stale).unwrap();
        assert!(was_created, "as the real server: create-on-update");
        assert_ne!(created["metadata"]["resourceVersion"], json!("5"));
        assert_eq!(
            o.put("default", "x", lease("x")).unwrap_err().code(),
            422,
            "no unconditional update"
        );
        let (_, was_created) = o.put("default", "x", created).unwrap();
        assert!(!was_created);
    }

    #[test]
    fn versions_conflicts_and_no_op_updates() {
        let mut o = Objects::new(10);
        let created = o.create("default", lease("x")).unwrap();
        let rv = created["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(o.create("default", lease("x")).unwrap_err().code(), 409);
        let same = o.update("default", "x", created.clone()).unwrap();
        assert_eq!(
            same["metadata"]["resourceVersion"],
            json!(rv),
            "no-op update keeps the version"
        );
        let mut changed = created.clone();
        changed["spec"]["holderIdentity"] = json!("b");
        let updated = o.update("default", "x", changed.clone()).unwrap();
        assert_ne!(updated["metadata"]["resourceVersion"], json!(rv));
        assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
        assert_eq!(
            o.update("default", "x", changed).unwrap_err().code(),
            409,
            "stale version"
        );
        assert_eq!(
            o.update("default", "y", lease("y")).unwrap_err().code(),
            404
        );
        assert_eq!(o.create("nowhere", lease("x")).unwrap_err().code(), 404);
        assert_eq!(
            o.create("default", lease("Bad_Name")).unwrap_err().code(),
            422
        );
    }

    #[test]
    fn history_is_bounded_and_compaction_expires_old_versions() {
        let mut o = Objects::new(2);
        for name in ["a", "b", "c"] {
            o.create("default", lease(name)).unwrap();
        }
        assert_eq!(o.changes_since("default", 0).len(), 2);
        assert!(o.oldest_resumable() > 1);
        o.compact();
        assert_eq!(o.oldest_resumable(), o.resource_version());
    }
}
