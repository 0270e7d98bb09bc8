//! Counts every etcd call on `/metrics`: the client tells [`Counted`] of each, and it files it
//! under `store="etcd"`, the gRPC service as the resource and the method as the verb.

use std::time::Duration;

use etcd_rpc::{Code, Error, Observe};

use crate::metrics::store::{Outcome, observe};

/// The observer the etcd store's client gets.
pub(super) struct Counted;

impl Observe for Counted {
    fn observe(&self, call: &'static str, error: Option<&Error>, took: Duration) {
        let (resource, verb) = call.split_once('/').unwrap_or(("", call));
        observe("etcd", resource, verb, outcome(error), took);
    }
}

/// The `result` label of a call that failed with `error`, if it failed.
fn outcome(error: Option<&Error>) -> Outcome {
    let Some(error) = error else {
        return Outcome::Ok;
    };
    match error {
        Error::Call { status, .. } => match status.code() {
            Code::PermissionDenied | Code::Unauthenticated => Outcome::Forbidden,
            Code::NotFound => Outcome::NotFound,
            Code::Unavailable => Outcome::Unreachable,
            Code::DeadlineExceeded | Code::Cancelled => Outcome::Timeout,
            _ => Outcome::Error,
        },
        _ => Outcome::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_answer_has_its_result() {
        let call = |code| Error::Call {
            call: "KV/Range",
            status: Box::new(etcd_rpc::Status::new(code, "x")),
        };
        assert_eq!(outcome(None), Outcome::Ok);
        assert_eq!(
            outcome(Some(&call(Code::PermissionDenied))),
            Outcome::Forbidden
        );
        assert_eq!(
            outcome(Some(&call(Code::Unavailable))),
            Outcome::Unreachable
        );
        assert_eq!(
            outcome(Some(&call(Code::DeadlineExceeded))),
            Outcome::Timeout
        );
        assert_eq!(outcome(Some(&call(Code::Internal))), Outcome::Error);
    }
}
