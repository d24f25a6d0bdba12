//! Integration suite: real Postgres, RabbitMQ and the real `pgfleet` binary. Each test has
//! its own catalog database and namespace, so tests run in parallel without sharing state.

mod backups;
mod dead_letters;
mod provision;
mod rollouts;
mod runtime;
mod support;
