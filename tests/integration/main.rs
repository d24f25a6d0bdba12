//! Integration suite: real Postgres, RabbitMQ and the real `pgfleet` binary. Each test has
//! its own catalog database and namespace, so tests run in parallel without sharing state.

mod amqps;
mod api;
mod backups;
mod browser;
mod console;
mod dead_letters;
mod deploy;
mod examples;
mod faults;
mod fleet;
mod job_actions;
mod neon;
mod provision;
mod rollouts;
mod runtime;
mod scale;
mod scheduler;
mod security;
mod servers;
mod support;
mod tls;
mod warm_pool;
mod webhooks;
