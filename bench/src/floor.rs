//! `ordermesh-bench floor`: what RabbitMQ and PostgreSQL alone do on this machine for the mesh's kind of
//! work, with the same number in flight: persistent publish-with-confirm then consume-with-ack round
//! trips of a 256-byte message, and the single-statement reservation `UPDATE … WHERE available >= 1` on
//! one hot row and spread over 10,000 rows. The mesh's rates are read against these.
//!
//! A checkout is many of those at once, so the floor also does a checkout's share of both alone: per
//! simulated checkout, in sequence, as many round trips, unrouted publishes and statements as one checkout
//! of the mesh costs the broker and the database ([`CheckoutWork`]). That rate is what the mesh would reach
//! if its own code cost nothing; the mesh's share of it says how much is left in the code and how much only
//! fewer messages or statements per checkout can give. Each part of that work is also measured alone (the
//! broker's round trips and publishes, the database's statements), because either part alone bounds the
//! rate as much as both together; and the database part once more with several orders per statement, to
//! show what putting several orders in one transaction would be worth.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, PublisherConfirm,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use ordermesh_config::QueueType;
use sqlx::{Connection as _, Executor as _, PgConnection, PgPool, postgres::PgPoolOptions};
use tokio::sync::{Notify, Semaphore};

/// The broker and database work of one checkout, as counted on the mesh (RabbitMQ's global counters and
/// `pg_stat_database`, per completed `spread` checkout: see BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CheckoutWork {
    /// Persistent publish-with-confirm + consume-with-ack round trips (deliveries to a queue).
    pub round_trips: u32,
    /// Publishes with confirm that no queue takes (status events nobody is bound to, direct replies).
    pub unrouted: u32,
    /// Single-statement transactions.
    pub statements: u32,
}

impl Default for CheckoutWork {
    /// The counts of this build: 11 publishes (7 deliveries, one event reaching two queues) and 10.4–10.6
    /// transactions per checkout.
    fn default() -> Self {
        Self { round_trips: 7, unrouted: 4, statements: 10 }
    }
}

impl std::str::FromStr for CheckoutWork {
    type Err = String;

    /// `ROUND_TRIPS,UNROUTED,STATEMENTS`, as in `7,4,10`.
    fn from_str(raw: &str) -> Result<Self, String> {
        let parts: Vec<u32> =
            raw.split(',').map(|p| p.trim().parse::<u32>()).collect::<Result<_, _>>().map_err(|_| {
                format!("--checkout-work must be ROUND_TRIPS,UNROUTED,STATEMENTS (whole numbers), got {raw:?}")
            })?;
        match parts[..] {
            [round_trips, unrouted, statements] if round_trips + unrouted + statements > 0 => {
                Ok(Self { round_trips, unrouted, statements })
            }
            _ => Err(format!("--checkout-work must be ROUND_TRIPS,UNROUTED,STATEMENTS, not all zero, got {raw:?}")),
        }
    }
}

/// What the floor run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Floor {
    /// Messages in flight (and PostgreSQL clients).
    pub in_flight: usize,
    /// Persistent publish-with-confirm + consume-with-ack round trips per second.
    pub rabbitmq_round_trips_per_s: f64,
    /// Single-statement reservations per second on one hot row.
    pub postgres_hot_updates_per_s: f64,
    /// The same spread over 10,000 rows.
    pub postgres_spread_updates_per_s: f64,
    /// What each simulated checkout did.
    pub checkout_work: CheckoutWork,
    /// Simulated checkouts per second: `checkout_work` each, in sequence, `in_flight` at once, broker and
    /// database sharing the machine as they do under the mesh.
    pub checkouts_per_s: f64,
    /// The same with only the work's round trips and unrouted publishes: what the broker alone allows, with
    /// all of the machine to itself (`None` when the work has no broker part).
    pub broker_checkouts_per_s: Option<f64>,
    /// The same with only the work's statements: what the database alone allows, one order per transaction.
    pub database_checkouts_per_s: Option<f64>,
    /// The database part again with [`BATCHED_ORDERS`] orders per statement (each statement updates that many
    /// spread rows): what the database alone would allow if every service put several orders in one
    /// transaction, a design the mesh does not have.
    pub database_batched_checkouts_per_s: Option<f64>,
}

/// Orders per statement in the floor's batched database part.
pub const BATCHED_ORDERS: usize = 8;

impl Floor {
    /// The floor for people.
    pub fn render(&self) -> String {
        format!(
            "floor with {} in flight: RabbitMQ {:.0} round trips/s; PostgreSQL {:.0} reservations/s on one hot row, {:.0}/s spread\n",
            self.in_flight,
            self.rabbitmq_round_trips_per_s,
            self.postgres_hot_updates_per_s,
            self.postgres_spread_updates_per_s
        ) + &format!(
            "floor for a checkout's work alone ({} round trips, {} unrouted publishes, {} statements each): {:.0} checkouts/s\n",
            self.checkout_work.round_trips,
            self.checkout_work.unrouted,
            self.checkout_work.statements,
            self.checkouts_per_s
        ) + &self.render_parts()
    }

    /// Each part of the work alone, and which of them caps a checkout rate.
    fn render_parts(&self) -> String {
        let mut out = String::new();
        if let Some(rate) = self.broker_checkouts_per_s {
            out += &format!("  its broker part alone (no statements): {rate:.0} checkouts/s\n");
        }
        if let Some(rate) = self.database_checkouts_per_s {
            out +=
                &format!("  its database part alone (no messages), one order per statement: {rate:.0} checkouts/s\n");
        }
        if let Some(rate) = self.database_batched_checkouts_per_s {
            out += &format!(
                "  its database part alone with {BATCHED_ORDERS} orders per statement: {rate:.0} checkouts/s\n"
            );
        }
        out
    }

    /// The most checkouts per second this machine allows for the work with one order per message and per
    /// statement: the lowest of the whole work and each of its parts alone.
    pub fn ceiling(&self) -> f64 {
        [Some(self.checkouts_per_s), self.broker_checkouts_per_s, self.database_checkouts_per_s]
            .into_iter()
            .flatten()
            .fold(f64::INFINITY, f64::min)
    }
}

/// Measures the floor for `duration` per part.
pub async fn measure(
    amqp: &str,
    database: &str,
    in_flight: usize,
    duration: Duration,
    work: CheckoutWork,
) -> anyhow::Result<Floor> {
    let broker = CheckoutWork { statements: 0, ..work };
    let db = CheckoutWork { round_trips: 0, unrouted: 0, ..work };
    let has_db = work.statements > 0;
    // A part alone is worth measuring only when the work has the other part too.
    let both = has_db && work.round_trips + work.unrouted > 0;
    Ok(Floor {
        in_flight,
        rabbitmq_round_trips_per_s: rabbitmq(amqp, in_flight, duration).await?,
        postgres_hot_updates_per_s: postgres(database, in_flight, duration, 1).await?,
        postgres_spread_updates_per_s: postgres(database, in_flight, duration, 10_000).await?,
        checkout_work: work,
        checkouts_per_s: checkouts(amqp, database, in_flight, duration, work, 1).await?,
        broker_checkouts_per_s: if both {
            Some(checkouts(amqp, database, in_flight, duration, broker, 1).await?)
        } else {
            None
        },
        database_checkouts_per_s: if both {
            Some(checkouts(amqp, database, in_flight, duration, db, 1).await?)
        } else {
            None
        },
        database_batched_checkouts_per_s: if has_db {
            Some(checkouts(amqp, database, in_flight, duration, db, BATCHED_ORDERS).await?)
        } else {
            None
        },
    })
}

/// A throwaway durable queue with a confirming publisher and a consumer taking `in_flight` at once.
struct FloorQueue {
    conn: Connection,
    publisher: Channel,
    queue: String,
    deliveries: Consumer,
}

impl FloorQueue {
    async fn open(url: &str, in_flight: usize) -> anyhow::Result<Self> {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        let publisher = conn.create_channel().await?;
        let consumer = conn.create_channel().await?;
        let queue = format!("ordermesh-bench.floor.{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        // The kind of queue the mesh's are (`AMQP_QUEUE_TYPE`, quorum unless set), so that the two compare. A
        // quorum queue cannot delete itself when unused: `close` deletes it.
        let queue_type: QueueType = match std::env::var("AMQP_QUEUE_TYPE") {
            Ok(value) => value.parse().map_err(|e| anyhow::anyhow!("AMQP_QUEUE_TYPE {e}"))?,
            Err(_) => QueueType::default(),
        };
        let (options, arguments) = match queue_type {
            QueueType::Quorum => {
                let mut arguments = FieldTable::default();
                arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
                (QueueDeclareOptions { durable: true, ..Default::default() }, arguments)
            }
            QueueType::Classic => {
                (QueueDeclareOptions { durable: true, auto_delete: true, ..Default::default() }, FieldTable::default())
            }
        };
        publisher.queue_declare(queue.as_str().into(), options, arguments).await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        consumer.basic_qos(u16::try_from(in_flight).unwrap_or(u16::MAX), BasicQosOptions::default()).await?;
        let deliveries = consumer
            .basic_consume(queue.as_str().into(), "floor".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        Ok(Self { conn, publisher, queue, deliveries })
    }
}

/// Publishes `body` persistent through the default exchange to `routing_key` (a queue, or nobody).
async fn publish(publisher: &Channel, routing_key: &str, body: &[u8]) -> lapin::Result<PublisherConfirm> {
    publisher
        .basic_publish(
            "".into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
}

/// Deletes the floor's queue and closes its connection.
async fn close(conn: Connection, publisher: &Channel, queue: &str) {
    let _ = publisher.queue_delete(queue.into(), Default::default()).await;
    let _ = conn.close(200, "floor done".into()).await;
}

async fn rabbitmq(url: &str, in_flight: usize, duration: Duration) -> anyhow::Result<f64> {
    let FloorQueue { conn, publisher, queue, mut deliveries } = FloorQueue::open(url, in_flight).await?;
    let slots = Arc::new(Semaphore::new(in_flight));
    let done = Arc::new(AtomicU64::new(0));
    let acker = {
        let (slots, done) = (slots.clone(), done.clone());
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = deliveries.next().await {
                if delivery.ack(BasicAckOptions::default()).await.is_err() {
                    break;
                }
                done.fetch_add(1, Ordering::Relaxed);
                slots.add_permits(1);
            }
        })
    };
    let body = vec![b'x'; 256];
    let started = Instant::now();
    while started.elapsed() < duration {
        let permit = slots.acquire().await?;
        permit.forget();
        let confirm = publish(&publisher, &queue, &body).await?;
        // Confirms are awaited off the publishing path, as a windowed publisher does.
        tokio::spawn(async move {
            let _ = confirm.await;
        });
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    acker.abort();
    close(conn, &publisher, &queue).await;
    Ok(rate)
}

async fn postgres(server: &str, clients: usize, duration: Duration, rows: i64) -> anyhow::Result<f64> {
    with_stock(server, clients, rows, |pool| async move {
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..clients)
            .map(|c| {
                let (pool, done) = (pool.clone(), done.clone());
                tokio::spawn(async move {
                    let mut i = c as i64;
                    while started.elapsed() < duration {
                        i = (i * 7919 + 13) % rows;
                        if reserve(&pool, i + 1).await.is_ok() {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.await;
        }
        Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
    })
    .await
}

/// The single-statement reservation on row `id`.
async fn reserve(pool: &PgPool, id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE stock SET available = available - 1 WHERE id = $1 AND available >= 1")
        .bind(id)
        .execute(pool)
        .await
        .map(drop)
}

/// The same reservation on `batch` spread rows at once, from `first` on (wrapping within `rows`): one
/// statement and one transaction for `batch` orders.
async fn reserve_many(pool: &PgPool, first: i64, batch: usize, rows: i64) -> sqlx::Result<()> {
    if batch == 1 {
        return reserve(pool, first + 1).await;
    }
    let ids: Vec<i64> = (0..batch as i64).map(|k| (first + k) % rows + 1).collect();
    sqlx::query("UPDATE stock SET available = available - 1 WHERE id = ANY($1) AND available >= 1")
        .bind(&ids)
        .execute(pool)
        .await
        .map(drop)
}

/// Runs `work` against a throwaway database holding `rows` stock rows, then drops the database.
async fn with_stock<F, Fut>(server: &str, clients: usize, rows: i64, work: F) -> anyhow::Result<f64>
where
    F: FnOnce(PgPool) -> Fut,
    Fut: Future<Output = anyhow::Result<f64>>,
{
    let name = format!("om_bench_floor_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut admin = PgConnection::connect(server).await?;
    admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await?;
    let url = match server.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => anyhow::bail!("--database must be a URL ending in a database name"),
    };
    let result = async {
        let pool =
            PgPoolOptions::new().max_connections(u32::try_from(clients).unwrap_or(u32::MAX)).connect(&url).await?;
        pool.execute("CREATE TABLE stock (id BIGINT PRIMARY KEY, available BIGINT NOT NULL CHECK (available >= 0))")
            .await?;
        sqlx::query("INSERT INTO stock SELECT g, 1000000000 FROM generate_series(1, $1) g")
            .bind(rows)
            .execute(&pool)
            .await?;
        let rate = work(pool.clone()).await;
        pool.close().await;
        rate
    }
    .await;
    admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await?;
    result
}

/// Simulated checkouts per second: each of `in_flight` workers does one checkout's `work` in sequence (every
/// round trip waits for its own delivery, every publish for its confirm), over and over, on spread rows.
/// With `batch` above 1 each statement covers that many orders (rows), and a worker's pass counts as that
/// many checkouts (only for work without messages: a message carries one order).
async fn checkouts(
    amqp: &str,
    database: &str,
    in_flight: usize,
    duration: Duration,
    work: CheckoutWork,
    batch: usize,
) -> anyhow::Result<f64> {
    debug_assert!(batch == 1 || work.round_trips + work.unrouted == 0, "messages carry one order each");
    let FloorQueue { conn, publisher, queue, mut deliveries } = FloorQueue::open(amqp, in_flight).await?;
    // Each worker has one message in flight at a time; the body names the worker to wake.
    let arrived: Arc<Vec<Notify>> = Arc::new((0..in_flight).map(|_| Notify::new()).collect());
    let acker = {
        let arrived = arrived.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = deliveries.next().await {
                if delivery.ack(BasicAckOptions::default()).await.is_err() {
                    break;
                }
                let worker = delivery.data.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
                if let Some(notify) = worker.and_then(|w| arrived.get(w as usize)) {
                    notify.notify_one();
                }
            }
        })
    };
    let unrouted_key = format!("{queue}.nobody");
    let rate = with_stock(database, in_flight, 10_000, |pool| {
        let (publisher, queue, arrived) = (publisher.clone(), queue.clone(), arrived.clone());
        async move {
            let done = Arc::new(AtomicU64::new(0));
            let started = Instant::now();
            let workers: Vec<_> = (0..in_flight)
                .map(|w| {
                    let (pool, done, publisher, arrived) =
                        (pool.clone(), done.clone(), publisher.clone(), arrived.clone());
                    let (queue, unrouted_key) = (queue.clone(), unrouted_key.clone());
                    tokio::spawn(async move {
                        let mut body = vec![b'x'; 256];
                        body[..8].copy_from_slice(&(w as u64).to_le_bytes());
                        let mut row = w as i64;
                        while started.elapsed() < duration {
                            let one = async {
                                for _ in 0..work.round_trips {
                                    let confirm = publish(&publisher, &queue, &body).await?;
                                    tokio::spawn(async move {
                                        let _ = confirm.await;
                                    });
                                    arrived[w].notified().await;
                                }
                                for _ in 0..work.unrouted {
                                    publish(&publisher, &unrouted_key, &body).await?.await?;
                                }
                                for _ in 0..work.statements {
                                    row = (row * 7919 + 13) % 10_000;
                                    reserve_many(&pool, row, batch, 10_000).await?;
                                }
                                anyhow::Ok(())
                            };
                            if one.await.is_ok() {
                                done.fetch_add(batch as u64, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for w in workers {
                let _ = w.await;
            }
            Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
        }
    })
    .await;
    acker.abort();
    close(conn, &publisher, &queue).await;
    rate
}
