"""Schemathesis hooks for tests/schemathesis.rs.

Acquire waits for the lock by design, and nothing in a fuzzing run ever releases what it took
(no heartbeats, so a lock is held until its ttl runs out, up to an hour). So an acquire that names
no wait (or a null one) gets one of 1 s, and a longer valid wait is cut to 1 s: a held lock then answers 409
lock_busy instead of hanging the run. Every other field, and every malformed body or wait, is
left as generated.
"""

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.method.upper() != "POST" or not case.path.endswith("/acquire"):
        return
    if isinstance(case.body, dict):
        wait = case.body.get("wait_seconds")
        # null means "absent" (wait until acquired), like a missing field.
        if wait is None or (isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > 1):
            case.body["wait_seconds"] = 1
    elif case.body is None or type(case.body).__name__ == "NotSet":
        case.body = {"wait_seconds": 1}
