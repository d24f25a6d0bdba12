//! RabbitMQ: the topology every process declares (DESIGN.md "Messages"), connecting with a
//! heartbeat, and a `Publisher` that waits for the broker's confirm on every message and
//! reconnects on the next call after any failure.

use crate::config::Namespace;
use crate::message::{JobKind, JobRequest};
use anyhow::{bail, Context, Result};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use secrecy::{ExposeSecret, SecretString};
use std::str::FromStr;
use tokio::sync::Mutex;

/// How long a publish waits for the broker's confirms before it counts as failed (a
/// broker under a disk or memory alarm blocks publishers instead of refusing them).
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A dispatch recorded but never confirmed this long is presumed lost with its publisher (a
/// process killed between recording and the broker's confirm) and published again.
pub const UNCONFIRMED_DISPATCH_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Heartbeat used when the URL does not set one: a dead broker or network is noticed in
/// about twice this, rather than the broker's default of a minute or more.
const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// Deliveries of one message after which a worker moves it to `<ns>.dead` unprocessed
/// (`x-delivery-count`, which quorum queues keep): the guard against a message that
/// crashes every worker before it is acked. Workers ack right after the claim, and stop
/// consuming while the catalog is unreachable, so ordinary trouble spends few deliveries.
/// Enforced by the workers (`PGFLEET_DELIVERY_LIMIT`), not by queue arguments, so it can
/// change without re-creating queues.
pub const DEFAULT_DELIVERY_LIMIT: i64 = 20;

/// The header quorum queues count a message's deliveries in.
pub const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// Deliveries of `delivery` before this one (0 for a first delivery).
pub fn previous_deliveries(properties: &BasicProperties) -> i64 {
    let Some(headers) = properties.headers() else {
        return 0;
    };
    match headers.inner().get(DELIVERY_COUNT_HEADER) {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortInt(n)) => i64::from(*n),
        Some(AMQPValue::LongUInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortShortInt(n)) => i64::from(*n),
        _ => 0,
    }
}

pub const REASON_HEADER: &str = "x-pgfleet-reason";

/// The broker names of one install.
impl Namespace {
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.as_str())
    }

    pub fn kind_queue(&self, kind: JobKind) -> String {
        format!("{}.{}", self.as_str(), kind.as_str())
    }

    /// Exchange and queue (same name) holding what could not be processed.
    pub fn dead(&self) -> String {
        format!("{}.dead", self.as_str())
    }

    /// Alternate exchange and queue of `<ns>.jobs`: messages whose routing key matches no
    /// job kind land here instead of being dropped by the broker.
    pub fn unroutable(&self) -> String {
        format!("{}.unroutable", self.as_str())
    }
}

pub async fn connect(url: &SecretString, connection_name: &str) -> Result<Connection> {
    let mut uri = lapin::uri::AMQPUri::from_str(url.expose_secret())
        .map_err(|_| anyhow::anyhow!("PGFLEET_AMQP_URL is not a valid amqp:// URL"))?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(DEFAULT_HEARTBEAT_SECS);
    }
    let scheme = match uri.scheme {
        lapin::uri::AMQPScheme::AMQPS => "amqps",
        lapin::uri::AMQPScheme::AMQP => "amqp",
    };
    let shown = format!("{scheme}://{}:{}/", uri.authority.host, uri.authority.port);
    let props = ConnectionProperties::default().with_connection_name(connection_name.into());
    let runtime = lapin::runtime::default_runtime().context("no async runtime for RabbitMQ")?;
    Connection::connect_uri_with_config(uri, props, amqp_tls_config()?, runtime)
        .await
        .with_context(|| {
            format!("cannot connect to RabbitMQ at {shown}; is it running and PGFLEET_AMQP_URL right?")
        })
}

/// TLS for `amqps://` URLs: the system's trusted certificates, plus those in the PEM file
/// `PGFLEET_AMQP_CA_FILE` (a private CA, a self-signed broker).
fn amqp_tls_config() -> Result<lapin::tcp::OwnedTLSConfig> {
    let mut config = lapin::tcp::OwnedTLSConfig::default();
    if let Some(path) = std::env::var_os("PGFLEET_AMQP_CA_FILE") {
        let pem = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading PGFLEET_AMQP_CA_FILE ({})",
                std::path::Path::new(&path).display()
            )
        })?;
        config.cert_chain = Some(pem);
    }
    Ok(config)
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Declares exchanges, queues and bindings. Idempotent; every process runs it at start
/// and after each reconnect. A queue that exists is used as it is — whatever arguments an
/// earlier version or an operator gave it — so changing pgfleet's settings never makes a
/// process fail with PRECONDITION_FAILED; new queues are quorum queues with no other
/// arguments (limits live in the workers and in RabbitMQ policies, which can change).
pub async fn declare_topology(conn: &Connection, ns: &Namespace) -> Result<()> {
    let channel = conn.create_channel().await?;
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for aux in [ns.dead(), ns.unroutable()] {
        channel
            .exchange_declare(
                aux.as_str().into(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        ensure_queue(conn, &aux).await?;
        channel
            .queue_bind(
                aux.as_str().into(),
                aux.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    channel
        .exchange_declare(
            ns.jobs_exchange().as_str().into(),
            ExchangeKind::Topic,
            durable_exchange,
            table(&[("alternate-exchange", long(&ns.unroutable()))]),
        )
        .await
        .context("declaring the jobs exchange")?;
    for kind in JobKind::ALL {
        let queue = ns.kind_queue(*kind);
        ensure_queue(conn, &queue).await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                ns.jobs_exchange().as_str().into(),
                kind.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

/// A new durable quorum queue, or the queue as it exists: one an earlier version or an
/// operator declared with other arguments is refused by the broker (PRECONDITION_FAILED,
/// which closes the channel — hence a channel of its own) and used as it is.
async fn ensure_queue(conn: &Connection, queue: &str) -> Result<()> {
    let channel = conn.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    match channel
        .queue_declare(queue.into(), durable, table(&[("x-queue-type", long("quorum"))]))
        .await
    {
        Ok(_) => {
            let _ = channel.close(200, "declared".into()).await;
            Ok(())
        }
        Err(e) if e.to_string().contains("PRECONDITION_FAILED") => {
            tracing::debug!(queue, "queue exists with other arguments; using it as it is");
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("declaring queue {queue}"))),
    }
}

/// A message to publish, with the broker's confirm awaited.
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

impl Outgoing {
    pub fn job(ns: &Namespace, req: &JobRequest) -> Self {
        Self {
            exchange: ns.jobs_exchange(),
            routing_key: req.kind().as_str().to_owned(),
            body: req.to_body(),
            properties: persistent_json(),
        }
    }

    /// A copy of a message for `<ns>.dead`, carrying why it could not be processed.
    pub fn dead(ns: &Namespace, body: &[u8], reason: &str, from_queue: &str, routing_key: &str) -> Self {
        let headers = table(&[
            (REASON_HEADER, long(reason)),
            ("x-pgfleet-queue", long(from_queue)),
            ("x-pgfleet-routing-key", long(routing_key)),
        ]);
        Self {
            exchange: ns.dead(),
            routing_key: routing_key.to_owned(),
            body: body.to_vec(),
            properties: persistent_json().with_headers(headers),
        }
    }
}

fn persistent_json() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
}

/// Publishes with publisher confirms. Holds one connection and channel, rebuilt on the
/// next call after a failure; safe to share between tasks.
pub struct Publisher {
    url: SecretString,
    ns: Namespace,
    name: String,
    state: Mutex<Option<(Connection, Channel)>>,
}

impl Publisher {
    pub fn new(url: SecretString, ns: Namespace, name: impl Into<String>) -> Self {
        Self {
            url,
            ns,
            name: name.into(),
            state: Mutex::new(None),
        }
    }

    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    async fn channel(&self) -> Result<Channel> {
        let mut state = self.state.lock().await;
        if let Some((conn, channel)) = state.as_ref() {
            if conn.status().connected() && channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        *state = None;
        let conn = connect(&self.url, &self.name).await?;
        declare_topology(&conn, &self.ns).await?;
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        *state = Some((conn, channel.clone()));
        Ok(channel)
    }

    async fn forget(&self) {
        if let Some((conn, _)) = self.state.lock().await.take() {
            let _ = conn.close(0, "reconnecting".into()).await;
        }
    }

    /// Publishes all messages, then waits for every confirm; fails unless all were acked.
    pub async fn publish_all(&self, messages: Vec<Outgoing>) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let result = match tokio::time::timeout(CONFIRM_TIMEOUT, self.try_publish_all(messages)).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!(
                "RabbitMQ did not take and confirm the published messages within {CONFIRM_TIMEOUT:?}; check the broker's disk and memory alarms"
            )),
        };
        if result.is_err() {
            self.forget().await;
        }
        result
    }

    async fn try_publish_all(&self, messages: Vec<Outgoing>) -> Result<()> {
        let channel = self.channel().await?;
        let mut confirms = Vec::with_capacity(messages.len());
        for m in messages {
            let confirm = channel
                .basic_publish(
                    m.exchange.as_str().into(),
                    m.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &m.body,
                    m.properties,
                )
                .await
                .context("publishing to RabbitMQ")?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirmation = confirm
                .await
                .context("waiting for RabbitMQ's publisher confirm")?;
            if confirmation.is_nack() {
                bail!("RabbitMQ refused (nacked) a published message; check the broker's logs and disk/memory alarms");
            }
        }
        Ok(())
    }

    /// Connects (if not connected), for readiness checks.
    pub async fn ensure_connected(&self) -> Result<()> {
        self.channel().await.map(|_| ())
    }

    /// (queue, ready messages, consumers) of each of this namespace's queues.
    pub async fn queue_depths(&self) -> Result<Vec<(String, u32, u32)>> {
        let mut queues: Vec<String> = JobKind::ALL.iter().map(|k| self.ns.kind_queue(*k)).collect();
        queues.push(self.ns.dead());
        let result = async {
            let channel = self.channel().await?;
            let mut depths = Vec::with_capacity(queues.len());
            for q in queues {
                let declared = channel
                    .queue_declare(
                        q.as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .with_context(|| format!("reading the depth of queue {q}"))?;
                depths.push((q, declared.message_count(), declared.consumer_count()));
            }
            anyhow::Ok(depths)
        }
        .await;
        if result.is_err() {
            self.forget().await;
        }
        result
    }

    pub async fn publish(&self, message: Outgoing) -> Result<()> {
        self.publish_all(vec![message]).await
    }

    pub async fn close(&self) {
        if let Some((conn, _)) = self.state.lock().await.take() {
            let _ = conn.close(200, "bye".into()).await;
        }
    }
}
