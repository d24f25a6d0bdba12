//! What happens to a job after its handler returned: the retry policy as a pure function of
//! the result and the attempts, so every branch is a unit test and nothing else decides it.

use crate::error::{CancelReason, JobError};
use crate::jobs::Outcome;
use std::time::Duration;

/// The fate of one attempt, written to the catalog by `execute` (fenced by the lease).
#[derive(Debug)]
pub enum Disposition {
    Succeeded(Outcome),
    /// Shutting down: back to `queued` without spending the attempt.
    HandBack,
    /// The lease was lost: another worker may own the job; write nothing.
    Abandon,
    /// A permanent error: `failed` now.
    Failed(String),
    /// Out of attempts: `dead`, with a copy in `<ns>.dead`.
    Dead(String),
    /// Back to `queued`, due after `delay`.
    Retry {
        error: String,
        delay: Duration,
    },
}

/// `attempts` counts this one; `retry_delay` is the backoff to use if it comes to a retry.
pub fn disposition(
    result: Result<Outcome, JobError>,
    attempts: i32,
    max_attempts: i32,
    retry_delay: Duration,
) -> Disposition {
    match result {
        Ok(outcome) => Disposition::Succeeded(outcome),
        Err(JobError::Cancelled(CancelReason::Shutdown)) => Disposition::HandBack,
        Err(JobError::Cancelled(CancelReason::LeaseLost)) => Disposition::Abandon,
        Err(e) if e.is_permanent() => Disposition::Failed(e.to_string()),
        Err(e) if attempts >= max_attempts => {
            Disposition::Dead(format!("gave up after {attempts} attempts; last error: {e}"))
        }
        Err(e) => Disposition::Retry {
            error: e.to_string(),
            delay: retry_delay,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_secs(4);

    fn of(result: Result<Outcome, JobError>, attempts: i32) -> Disposition {
        disposition(result, attempts, 3, DELAY)
    }

    #[test]
    fn every_branch() {
        let ok = Outcome::new("done", serde_json::json!({}));
        assert!(matches!(of(Ok(ok), 1), Disposition::Succeeded(o) if o.summary == "done"));
        assert!(matches!(
            of(Err(JobError::Cancelled(CancelReason::Shutdown)), 3),
            Disposition::HandBack
        ));
        assert!(matches!(
            of(Err(JobError::Cancelled(CancelReason::LeaseLost)), 1),
            Disposition::Abandon
        ));
        let permanent = || JobError::Permanent(anyhow::anyhow!("bad SQL"));
        assert!(matches!(of(Err(permanent()), 1), Disposition::Failed(e) if e == "bad SQL"));
        // Permanent wins over the attempt count: it is `failed`, not `dead`.
        assert!(matches!(of(Err(permanent()), 3), Disposition::Failed(_)));
        let transient = || JobError::Other(anyhow::anyhow!("connection refused"));
        assert!(matches!(
            of(Err(transient()), 2),
            Disposition::Retry { error, delay } if error == "connection refused" && delay == DELAY
        ));
        assert!(matches!(
            of(Err(transient()), 3),
            Disposition::Dead(e) if e == "gave up after 3 attempts; last error: connection refused"
        ));
    }
}
