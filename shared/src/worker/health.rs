//! What a worker's readiness probe reports: whether it consumes every job queue and can
//! reach the catalog. A worker that can't reach the catalog stops consuming (its unacked
//! deliveries go back to their queues, untouched) and says why, instead of taking
//! deliveries it can't claim.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Shared between the worker and whoever answers its probes.
#[derive(Debug, Default)]
pub struct WorkerHealth {
    consuming: AtomicBool,
    reason: Mutex<String>,
}

impl WorkerHealth {
    /// Consuming every job queue with the catalog reachable.
    pub fn set_ready(&self) {
        self.consuming.store(true, Ordering::SeqCst);
        self.reason.lock().expect("not poisoned").clear();
    }

    /// Not consuming, and why (for the probe's answer and the logs).
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        self.consuming.store(false, Ordering::SeqCst);
        *self.reason.lock().expect("not poisoned") = reason.into();
    }

    /// `Ok` when ready, else why not.
    pub fn ready(&self) -> Result<(), String> {
        if self.consuming.load(Ordering::SeqCst) {
            Ok(())
        } else {
            let reason = self.reason.lock().expect("not poisoned").clone();
            Err(if reason.is_empty() {
                "starting".into()
            } else {
                reason
            })
        }
    }
}

/// Serves `GET /healthz` (200 while the process runs) and `GET /readyz` (200 while the
/// worker consumes with the catalog reachable, else 503 saying why) until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: std::sync::Arc<WorkerHealth>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Json;
    use serde_json::json;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let health = health.clone();
                async move {
                    match health.ready() {
                        Ok(()) => (StatusCode::OK, Json(json!({"worker": "ok"}))),
                        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"worker": reason}))),
                    }
                }
            }),
        );
    tracing::info!(addr = %listener.local_addr()?, "worker probes listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}
