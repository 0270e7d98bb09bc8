//! Hand-over after a long hold, on the real kube-apiserver: a holder keeps the lock for 100 s, as
//! a lock is held in production, then releases; the waiter, on another elector, has sent
//! nothing but its watch in the meantime. Read against back-to-back hand-overs on the same
//! server and electors, it shows what a quiet elector's first write costs.
//!
//! The hold is longer than the 90 s an idle connection lives in the client's pool (and in the
//! API server), so the waiter's write goes out on a new connection, as after any long hold in
//! production. A 30 s hold reused a pooled connection and did not show that cost.

use std::time::Duration;

use anyhow::Result;

use super::Run;
use super::handover::{electors, ours_env, trials_of, with_logs};
use crate::report::Unit;
use crate::stats::Summary;
use sync_testkit::stores::StoreKind;

/// How long the holder keeps the lock before each release.
const HOLD: Duration = Duration::from_secs(100);

/// Measures the real kube-apiserver, when it is built.
pub fn run(run: &mut Run) -> Result<()> {
    if !run.stores("hold").contains(&StoreKind::KubeApiServer) {
        return Ok(());
    }
    let kind = StoreKind::KubeApiServer;
    let backend = run.backend(kind)?;
    let electors = electors(run, &backend, 2, 15)?;
    let env = ours_env(&electors, "bench-hold", 15);
    let within = HOLD + Duration::from_secs(30);
    let back_to_back = trials_of(
        "ours",
        &env,
        run.pick(20, 100),
        true,
        within,
        (Duration::ZERO, Duration::ZERO),
    )
    .map_err(|err| with_logs(err, &electors))?;
    let held = trials_of(
        "ours",
        &env,
        run.pick(2, 5),
        true,
        within,
        (HOLD, Duration::ZERO),
    )
    .map_err(|err| with_logs(err, &electors))?;
    let system = kind.system();
    let back_to_back = Summary::of_durations(&back_to_back).expect("samples");
    let held = Summary::of_durations(&held).expect("samples");
    run.report
        .add(
            "hold",
            &system,
            "release to next acquire, back to back",
            Unit::Seconds,
            back_to_back,
        )
        .note = Some("holder and waiter on two electors".into());
    run.report
        .add(
            "hold",
            &system,
            "release to next acquire, after a 100 s hold",
            Unit::Seconds,
            held,
        )
        .note = Some("the waiter's elector sent nothing but its watch for 100 s".into());
    let row = run.report.add(
        "hold",
        &system,
        "after a 100 s hold / back to back (medians)",
        Unit::Ratio,
        Summary::of(&[held.median / back_to_back.median]).expect("one"),
    );
    row.goal = Some("at most 1.5x".into());
    Ok(())
}
