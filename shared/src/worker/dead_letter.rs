//! The dead-letter path: what can't be processed is copied to `<ns>.dead` with the reason
//! (header `x-pgfleet-reason`) and recorded in the catalog's `dead_letters`. A delivery is
//! acked only once its copy is confirmed, so nothing is ever dropped.

use super::consume::{ack, nack_later};
use super::Worker;
use crate::catalog::JobRecord;
use crate::queue::Outgoing;
use lapin::message::Delivery;
use tracing::warn;

impl Worker {
    /// Copies the message to `<ns>.dead` with the reason, records it, then acks. If the copy
    /// can't be published the delivery is requeued.
    pub(super) async fn dead_letter(
        &self,
        delivery: &Delivery,
        queue_name: &str,
        reason: &str,
        job_id: Option<uuid::Uuid>,
    ) {
        let routing_key = delivery.routing_key.as_str();
        let copy = Outgoing::dead(
            &self.ctx.namespace,
            &delivery.data,
            reason,
            queue_name,
            routing_key,
        );
        if let Err(e) = self.publisher.publish(copy).await {
            return nack_later(delivery, &e).await;
        }
        if let Err(e) = self
            .ctx
            .catalog
            .record_dead_letter(queue_name, Some(routing_key), reason, &delivery.data, job_id)
            .await
        {
            warn!(error = %format!("{e:#}"), "dead letter published but not recorded in the catalog");
        }
        warn!(
            queue = queue_name,
            reason, "message moved to the dead-letter queue"
        );
        ack(delivery).await;
    }

    /// A job out of attempts: its request goes to `<ns>.dead` too (it is `dead` in the
    /// catalog whatever happens here).
    pub(super) async fn dead_letter_job(&self, job: &JobRecord, reason: &str) {
        let Ok(request) = job.request() else { return };
        let ns = &self.ctx.namespace;
        let body = request.to_body();
        let queue = ns.kind_queue(request.kind());
        let copy = Outgoing::dead(ns, &body, reason, &queue, request.kind().as_str());
        if let Err(e) = self.publisher.publish(copy).await {
            warn!(error = %format!("{e:#}"), "could not copy the dead job to the dead-letter queue (it is dead in the catalog)");
        }
        let _ = self
            .ctx
            .catalog
            .record_dead_letter(&queue, Some(request.kind().as_str()), reason, &body, Some(job.id))
            .await;
    }
}
