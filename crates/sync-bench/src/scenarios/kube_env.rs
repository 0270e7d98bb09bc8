//! The environment of the workers that talk to Kubernetes themselves (kube-lease-manager and
//! client-go's leader election): a kubeconfig of its own for each of two slots, so the audit log
//! can count each worker's requests by its user.

use anyhow::Result;
use sync_testkit::stores::Backend;

use crate::worker::{KUBECONFIG_ENV, LOCK_ENV};

/// The environment of worker `i` on Lease `lock`: slot `i % 2`'s kubeconfig (user `LOCK-0` or
/// `LOCK-1`) and the Lease's name.
pub fn slots(
    backend: &Backend,
    lock: &str,
) -> Result<impl Fn(usize) -> Vec<(&'static str, String)> + use<>> {
    let configs = [
        backend.kubeconfig(&format!("{lock}-0"))?,
        backend.kubeconfig(&format!("{lock}-1"))?,
    ];
    let lock = lock.to_owned();
    Ok(move |i: usize| {
        vec![
            (KUBECONFIG_ENV, configs[i % 2].clone()),
            (LOCK_ENV, lock.clone()),
        ]
    })
}
