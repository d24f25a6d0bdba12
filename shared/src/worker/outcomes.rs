//! Catalog writes of many jobs at once: a `Batcher` takes every request waiting and hands
//! them to one statement, so jobs claimed or finishing together cost one catalog round trip
//! and one transaction, not one each. Nothing waits for a batch to fill: a request arriving
//! while no write is in flight is written at once; those arriving during a write go in the
//! next one. Each row's write stays fenced (a claim by its key, an outcome by its epoch).

use crate::catalog::{Catalog, CatalogError, JobRecord, NewJob};
use serde_json::Value;
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// The most rows one statement writes.
const MOST_PER_WRITE: usize = 256;

/// One writing task fed by a queue; it ends when the `Batcher` is dropped.
pub(super) struct Batcher<T, R> {
    queue: mpsc::UnboundedSender<(T, oneshot::Sender<R>)>,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// `write` gets the waiting requests and answers each, in order.
    fn start<F, Fut>(write: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let (queue, mut waiting) = mpsc::unbounded_channel::<(T, oneshot::Sender<R>)>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while waiting.recv_many(&mut batch, MOST_PER_WRITE).await > 0 {
                let (requests, answers): (Vec<T>, Vec<oneshot::Sender<R>>) = batch.drain(..).unzip();
                for (answer, result) in answers.into_iter().zip(write(requests).await) {
                    let _ = answer.send(result);
                }
            }
        });
        Self { queue }
    }

    /// `None` when the writing task has stopped (the runtime is shutting down).
    async fn submit(&self, request: T) -> Option<R> {
        let (answer, answered) = oneshot::channel();
        self.queue.send((request, answer)).ok()?;
        answered.await.ok()
    }
}

fn stopped() -> CatalogError {
    CatalogError::Other(anyhow::anyhow!("the worker's catalog writer has stopped"))
}

/// Successes: `(job, epoch, outcome)` → whether it was written (`false`: the lease was lost).
pub(super) struct SuccessWriter(Batcher<(Uuid, i64, Value), Result<bool, CatalogError>>);

impl SuccessWriter {
    pub(super) fn start(catalog: Catalog) -> Self {
        Self(Batcher::start(move |rows: Vec<(Uuid, i64, Value)>| {
            let catalog = catalog.clone();
            async move {
                match catalog.finish_succeeded(&rows).await {
                    Ok(written) => rows.iter().map(|r| Ok(written.contains(&(r.0, r.1)))).collect(),
                    Err(e) if rows.len() == 1 => vec![Err(e)],
                    // One row's trouble must not fail the others: each on its own.
                    Err(_) => {
                        let mut results = Vec::with_capacity(rows.len());
                        for row in rows {
                            let fence = (row.0, row.1);
                            results.push(catalog.finish_succeeded(&[row]).await.map(|w| w.contains(&fence)));
                        }
                        results
                    }
                }
            }
        }))
    }

    pub(super) async fn succeeded(&self, id: Uuid, epoch: i64, outcome: Value) -> Result<bool, CatalogError> {
        self.0
            .submit((id, epoch, outcome))
            .await
            .unwrap_or_else(|| Err(stopped()))
    }
}

/// First claims of new jobs (an application's messages): recorded already claimed, many per
/// statement. `None` for a job whose key is taken: the caller claims it the long way.
pub(super) struct NewJobClaims(Batcher<NewJob, Result<Option<JobRecord>, CatalogError>>);

impl NewJobClaims {
    pub(super) fn start(catalog: Catalog, owner: String, lease: Duration) -> Self {
        Self(Batcher::start(move |news: Vec<NewJob>| {
            let (catalog, owner) = (catalog.clone(), owner.clone());
            async move {
                match catalog.claim_new_jobs(&news, &owner, lease).await {
                    Ok(claimed) => news
                        .iter()
                        .map(|n| Ok(claimed.iter().find(|j| j.id == n.id).cloned()))
                        .collect(),
                    Err(e) if news.len() == 1 => vec![Err(e)],
                    // One message's trouble must not fail the others: each on its own.
                    Err(_) => {
                        let mut results = Vec::with_capacity(news.len());
                        for new in &news {
                            let claimed = catalog
                                .claim_new_jobs(std::slice::from_ref(new), &owner, lease)
                                .await;
                            results.push(claimed.map(|mut c| c.pop()));
                        }
                        results
                    }
                }
            }
        }))
    }

    pub(super) async fn claim(&self, new: &NewJob) -> Result<Option<JobRecord>, CatalogError> {
        self.0.submit(new.clone()).await.unwrap_or_else(|| Err(stopped()))
    }
}
