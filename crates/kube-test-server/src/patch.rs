//! PATCH: JSON merge patches (RFC 7386; for a Lease, whose spec has no lists, a strategic merge
//! patch means the same), and server-side apply with field ownership and conflicts, as far as
//! Leases need them.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Which kind of patch a request carries, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json` or `application/strategic-merge-patch+json`.
    Merge,
    /// `application/apply-patch+yaml` (server-side apply; this server reads it as JSON).
    Apply,
}

impl PatchKind {
    /// The kind for a `Content-Type`, if this server speaks it.
    pub fn of(content_type: &str) -> Option<Self> {
        match content_type.split(';').next()?.trim() {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                Some(Self::Merge)
            }
            "application/apply-patch+yaml" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Applies a JSON merge patch to `target`: objects merge, `null` removes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Fields the server owns or that name the object: never owned by a field manager.
const SERVER_FIELDS: [&str; 8] = [
    "apiVersion",
    "kind",
    "metadata.name",
    "metadata.namespace",
    "metadata.resourceVersion",
    "metadata.uid",
    "metadata.creationTimestamp",
    "metadata.managedFields",
];

/// The leaf fields of `object` with their values, as dotted paths (`spec.holderIdentity`).
pub fn leaves(object: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, child, out);
                }
            }
            _ => {
                if !SERVER_FIELDS.contains(&prefix) {
                    out.insert(prefix.to_owned(), value.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", object, &mut out);
    out
}

/// Which field manager owns each field of one object.
#[derive(Debug, Default, Clone)]
pub struct Owners(BTreeMap<String, String>);

impl Owners {
    /// After an update by `manager` from `before` to `after`: it owns what it changed or added;
    /// removed fields have no owner.
    pub fn updated(&mut self, manager: &str, before: &Value, after: &Value) {
        let (old, new) = (leaves(before), leaves(after));
        self.0.retain(|path, _| new.contains_key(path));
        for (path, value) in new {
            if old.get(&path) != Some(&value) {
                self.0.insert(path, manager.to_owned());
            }
        }
    }

    /// The fields an apply of `applied` by `manager` would change that another manager owns:
    /// `(field, owner)` pairs.
    pub fn conflicts(
        &self,
        manager: &str,
        current: &Value,
        applied: &Value,
    ) -> Vec<(String, String)> {
        let now = leaves(current);
        leaves(applied)
            .into_iter()
            .filter(|(path, value)| now.get(path).is_some_and(|v| v != value))
            .filter_map(|(path, _)| {
                let owner = self.0.get(&path)?;
                (owner != manager).then(|| (path, owner.clone()))
            })
            .collect()
    }

    /// After an apply by `manager`: it owns every field it applied; fields gone have no owner.
    pub fn applied(&mut self, manager: &str, applied: &Value, after: &Value) {
        let present = leaves(after);
        self.0.retain(|path, _| present.contains_key(path));
        for path in leaves(applied).into_keys() {
            if present.contains_key(&path) {
                self.0.insert(path, manager.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patches_merge_objects_and_remove_nulls() {
        let mut lease =
            json!({"spec": {"holderIdentity": "a", "renewTime": "t"}, "metadata": {"name": "x"}});
        merge(
            &mut lease,
            &json!({"spec": {"holderIdentity": null, "leaseTransitions": 2}}),
        );
        assert_eq!(
            lease,
            json!({"spec": {"renewTime": "t", "leaseTransitions": 2}, "metadata": {"name": "x"}})
        );
    }

    #[test]
    fn an_apply_conflicts_only_with_fields_another_manager_set_differently() {
        let mut owners = Owners::default();
        let held = json!({"metadata": {"name": "x"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 30}});
        owners.applied("a", &held, &held);
        let take = json!({"spec": {"holderIdentity": "b", "leaseDurationSeconds": 30}});
        assert_eq!(
            owners.conflicts("b", &held, &take),
            vec![("spec.holderIdentity".to_owned(), "a".to_owned())]
        );
        assert!(
            owners.conflicts("a", &held, &take).is_empty(),
            "a manager may change its own fields"
        );
        // Once an update removes the field, nobody owns it and the apply goes through.
        let released = json!({"metadata": {"name": "x"}, "spec": {"leaseDurationSeconds": 30}});
        owners.updated("a", &held, &released);
        assert!(owners.conflicts("b", &released, &take).is_empty());
    }
}
