//! The job runtime's own cost (issue #17): N jobs through the real broker and catalog on one
//! worker started with `--noop-jobs` (every claimed job is recorded as succeeded without
//! running a handler), so all that is measured is what the runtime does per job: the
//! delivery, parsing, a slot, the claim (recording the job, lease and fencing epoch), the
//! ack, the lease renewer, the fenced outcome write.
//!
//! The jobs are signups as an application publishes them (plain AMQP JSON, no job recorded
//! beforehand), published as fast as the broker confirms them. Baseline from the same run:
//! the broker alone — the same number of persistent messages through a quorum queue, one
//! consumer with the same prefetch acking each delivery — the ceiling any AMQP worker has
//! on this machine.
//!
//! Run: `bench/noop-jobs.sh [--jobs 20000] [--concurrency 8]`.

use anyhow::{bail, Result};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use pgfleet_bench::{
    bench_namespace, catalog_transactions, checkpoint, cleanup, cpu_seconds, numeric_flag,
    process_cpu_seconds, publish_persistent, publish_signups, wait_for_consumer, AMQP_URL,
};
use pgfleet_shared::secrets::SecretKey;
use secrecy::ExposeSecret;
use sqlx::{Connection as _, PgConnection};
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<()> {
    let jobs = numeric_flag("--jobs", 20_000).max(1);
    let concurrency = numeric_flag("--concurrency", 8).max(1);
    let namespace = bench_namespace();
    let work = std::env::temp_dir().join(&namespace);
    std::fs::create_dir_all(&work)?;
    let result = run(&namespace, &work, jobs, concurrency).await;
    cleanup(&namespace).await?;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn run(namespace: &str, work: &std::path::Path, jobs: usize, concurrency: usize) -> Result<()> {
    println!("broker alone: {jobs} persistent messages through a quorum queue, prefetch {concurrency}…");
    let floor = broker_floor(namespace, jobs, concurrency).await?;

    let catalog_url = format!("postgres://postgres@127.0.0.1:5432/{namespace}_catalog");
    let pgfleet = std::env::current_exe()?.with_file_name("pgfleet");
    let mut worker = Command::new(&pgfleet)
        .args(["worker", "--noop-jobs", "--concurrency", &concurrency.to_string()])
        .env("PGFLEET_CATALOG_URL", &catalog_url)
        .env("PGFLEET_NAMESPACE", namespace)
        .env(
            "PGFLEET_SECRET_KEY",
            SecretKey::generate().to_base64().expose_secret(),
        )
        .env(
            "PGFLEET_BACKUP_URL",
            format!("file://{}", work.join("backups").display()),
        )
        .env("PGFLEET_LOG", "warn")
        .stderr(std::fs::File::create(work.join("worker.log"))?)
        .spawn()?;
    let measured = async {
        wait_for_consumer(namespace).await?;
        let mut catalog = PgConnection::connect(&catalog_url).await?;
        checkpoint().await?;
        let catalog_db = format!("{namespace}_catalog");
        let xacts_before = catalog_transactions(&mut catalog, &catalog_db).await?;
        let worker_cpu_before = process_cpu_seconds(worker.id());
        let machine_before = cpu_seconds();
        println!("pgfleet: {jobs} no-op jobs through one worker (--noop-jobs, concurrency {concurrency})…");
        let started = Instant::now();
        publish_signups(namespace, jobs).await?;
        let published = started.elapsed();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let done: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
                .fetch_one(&mut catalog)
                .await?;
            if done as usize >= jobs {
                break;
            }
            if Instant::now() > deadline {
                bail!("{done} of {jobs} jobs done after 10 minutes; see {}", work.join("worker.log").display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let wall = started.elapsed();
        let worker_cpu = process_cpu_seconds(worker.id()) - worker_cpu_before;
        let machine_after = cpu_seconds();
        // From the first claim to the last outcome, as the catalog recorded them.
        let span_secs: f64 = sqlx::query_scalar(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 FROM jobs WHERE status = 'succeeded'",
        )
        .fetch_one(&mut catalog)
        .await?;
        let others: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status <> 'succeeded'")
            .fetch_one(&mut catalog)
            .await?;
        if others > 0 {
            bail!("{others} jobs did not succeed");
        }
        // An idle backend reports its counters within 10 s (PGSTAT_IDLE_INTERVAL).
        tokio::time::sleep(Duration::from_millis(11_000)).await;
        let xacts = catalog_transactions(&mut catalog, &catalog_db).await? - xacts_before;
        Ok::<_, anyhow::Error>(Measured {
            published,
            wall,
            span_secs,
            xacts_per_job: xacts as f64 / jobs as f64,
            worker_cpu_ms_per_job: worker_cpu * 1000.0 / jobs as f64,
            machine_cpu_ms_per_job: ((machine_after.0 + machine_after.1) - (machine_before.0 + machine_before.1))
                * 1000.0
                / jobs as f64,
        })
    }
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let _ = worker.wait();
    let m = measured?;

    println!();
    println!("| {jobs} jobs, one consumer, prefetch {concurrency} | jobs/s | wall | per job |");
    println!("|---|---|---|---|");
    println!(
        "| broker alone (publish, then deliver + ack) | {:.0} msg/s | {:.2} s | — |",
        jobs as f64 / floor.as_secs_f64(),
        floor.as_secs_f64()
    );
    println!(
        "| pgfleet worker --noop-jobs (first claim → last outcome) | {:.0} jobs/s | {:.2} s (publishing took {:.2} s of it) | {:.2} catalog transactions, worker CPU {:.3} ms, machine CPU {:.3} ms |",
        jobs as f64 / m.span_secs,
        m.wall.as_secs_f64(),
        m.published.as_secs_f64(),
        m.xacts_per_job,
        m.worker_cpu_ms_per_job,
        m.machine_cpu_ms_per_job
    );
    println!(
        "\nno-op jobs through one worker: {:.0} jobs/s (required >= 1000, target >= 2000); {:.2} catalog transactions per job",
        jobs as f64 / m.span_secs,
        m.xacts_per_job
    );
    Ok(())
}

struct Measured {
    published: Duration,
    wall: Duration,
    span_secs: f64,
    xacts_per_job: f64,
    worker_cpu_ms_per_job: f64,
    machine_cpu_ms_per_job: f64,
}

/// The broker's own ceiling: `n` persistent messages into a quorum queue, then one consumer
/// with prefetch `prefetch` acking each; the time from the first delivery to the last ack.
async fn broker_floor(namespace: &str, n: usize, prefetch: usize) -> Result<Duration> {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let queue = format!("{namespace}.floor");
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), durable, args)
        .await?;
    let bodies = (0..n).map(|i| format!(r#"{{"kind":"provision","tenant":"noop-{i:06}","key":"noop-{i}"}}"#));
    publish_persistent("", &queue, bodies).await?;
    let consumer_channel = conn.create_channel().await?;
    consumer_channel
        .basic_qos(
            u16::try_from(prefetch).unwrap_or(u16::MAX),
            BasicQosOptions::default(),
        )
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            queue.as_str().into(),
            "floor".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut started = None;
    let mut acked = 0;
    while acked < n {
        let Some(delivery) = consumer.next().await else {
            bail!("the broker ended the consumer after {acked} of {n} deliveries");
        };
        started.get_or_insert_with(Instant::now);
        delivery?.ack(BasicAckOptions::default()).await?;
        acked += 1;
    }
    let took = started.map(|s| s.elapsed()).unwrap_or_default();
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "bye".into()).await;
    Ok(took)
}
