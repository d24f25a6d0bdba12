//! Bulk work yields the machine to interactive work in the same worker. Slots per kind keep
//! a signup from waiting for a backup's *slot*; this keeps it from waiting for the CPU the
//! backups use: while a provision or a restore runs in this worker, scheduled backups stop
//! reading their dump between blocks (1 MiB), so `pg_dump` and its server backend block on
//! a full pipe and the signup's `CREATE DATABASE` gets the cores. A pause is bounded
//! (`MAX_PAUSE` per block), so a stream of signups slows backups down but never stops them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The longest a bulk job waits at one block for interactive work to finish.
pub const MAX_PAUSE: Duration = Duration::from_secs(2);

#[derive(Clone, Default)]
pub struct Priority {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    interactive: AtomicUsize,
    idle: Notify,
}

/// Held while an interactive job runs.
pub struct Interactive {
    inner: Arc<Inner>,
}

impl Drop for Interactive {
    fn drop(&mut self) {
        if self.inner.interactive.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

impl Priority {
    /// Marks an interactive job running until the guard is dropped.
    pub fn interactive(&self) -> Interactive {
        self.inner.interactive.fetch_add(1, Ordering::AcqRel);
        Interactive {
            inner: self.inner.clone(),
        }
    }

    /// Interactive jobs running now.
    pub fn interactive_running(&self) -> usize {
        self.inner.interactive.load(Ordering::Acquire)
    }

    /// Called by bulk work between blocks: returns at once when no interactive job runs,
    /// else when they have all finished, or after `MAX_PAUSE`.
    pub async fn bulk_turn(&self) {
        let notified = self.inner.idle.notified();
        tokio::pin!(notified);
        // Registered before the check, so a finish in between is not missed.
        notified.as_mut().enable();
        if self.interactive_running() == 0 {
            return;
        }
        let _ = tokio::time::timeout(MAX_PAUSE, notified).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bulk_waits_for_interactive_work_and_no_longer() {
        let priority = Priority::default();
        tokio::time::timeout(Duration::from_millis(50), priority.bulk_turn())
            .await
            .expect("no interactive work: no wait");
        let guard = priority.interactive();
        let waiting = {
            let priority = priority.clone();
            tokio::spawn(async move { priority.bulk_turn().await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "bulk work went on during a signup");
        drop(guard);
        tokio::time::timeout(Duration::from_millis(500), waiting)
            .await
            .expect("bulk work resumed when the signup finished")
            .unwrap();
    }

    #[tokio::test]
    async fn a_pause_is_bounded() {
        let priority = Priority::default();
        let _endless = priority.interactive();
        let started = std::time::Instant::now();
        tokio::time::timeout(MAX_PAUSE + Duration::from_secs(2), priority.bulk_turn())
            .await
            .expect("bulk work went on after its longest pause");
        assert!(started.elapsed() >= MAX_PAUSE);
    }
}
