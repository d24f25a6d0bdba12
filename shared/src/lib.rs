//! pgfleet: a control plane for database-per-tenant PostgreSQL.
//!
//! Producers (application code, the CLI, the HTTP API, the scheduler) publish jobs to
//! RabbitMQ (`queue`, contract in `message`). Workers (`worker`) consume them, claim each
//! in the catalog (`catalog`) under a lease with a fencing epoch, ack, and run the job's
//! handler (`jobs::*`, one file per kind) against tenant servers (`servers`). The catalog is
//! the source of truth: a job is done once however often its message is delivered, and an
//! outcome is written only by the worker that still holds the lease.
//!
//! Invariants: a tenant slug is validated once at the edge into `TenantSlug` and identifiers
//! built from it are quoted; credentials are stored encrypted (`secrets`) and never logged;
//! every handler is safe to run twice.
//!
//! Layers, bottom-up (no module imports one above it; `ARCHITECTURE.md` has the map):
//! contracts (`status`, `slug`, `message`, `migration_set`, `schedule`) → infrastructure
//! (`config`, `postgres`, `secrets`, `catalog`, `queue`, `store`, `servers`,
//! `tenant_migrations`, `pg_tools`) → runtime (`error`, `jobs`, `worker`, `producer`,
//! `scheduler`) → edges (`fleet`, the use cases of the CLI and the API; `api`; `views`;
//! `services`, the wiring).

pub mod api;
pub mod catalog;
pub mod compress;
pub mod config;
pub mod console;
pub mod error;
pub mod fleet;
pub(crate) mod hex;
pub mod jobs;
pub mod limits;
pub mod message;
pub mod migration_set;
pub mod neon;
pub mod pg_tools;
pub(crate) mod postgres;
pub mod priority;
pub mod probe;
pub mod producer;
pub mod queue;
pub(crate) mod schedule;
pub mod scheduler;
pub mod secrets;
pub mod servers;
pub mod services;
pub mod slug;
pub(crate) mod sql_scan;
pub mod status;
pub mod store;
pub mod tenant_migrations;
pub mod views;
pub mod webhooks;
pub mod worker;

pub use config::{Config, KindSlots, Namespace, WorkerSettings};
pub use error::JobError;
pub use message::{JobKind, JobRequest, JobSpec};
pub use slug::TenantSlug;
