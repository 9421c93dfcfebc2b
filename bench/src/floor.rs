//! `ordermesh-bench floor`: what RabbitMQ and PostgreSQL alone do on this machine for the mesh's kind of
//! work, with the same number in flight: persistent publish-with-confirm then consume-with-ack round
//! trips of a 256-byte message, and the single-statement reservation `UPDATE … WHERE available >= 1` on
//! one hot row and spread over 10,000 rows. The mesh's rates are read against these.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
};
use sqlx::{Connection as _, Executor as _, PgConnection, postgres::PgPoolOptions};
use tokio::sync::Semaphore;

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
}

impl Floor {
    /// The floor for people.
    pub fn render(&self) -> String {
        format!(
            "floor with {} in flight: RabbitMQ {:.0} round trips/s; PostgreSQL {:.0} reservations/s on one hot row, {:.0}/s spread\n",
            self.in_flight,
            self.rabbitmq_round_trips_per_s,
            self.postgres_hot_updates_per_s,
            self.postgres_spread_updates_per_s
        )
    }
}

/// Measures the floor for `duration` per part.
pub async fn measure(amqp: &str, database: &str, in_flight: usize, duration: Duration) -> anyhow::Result<Floor> {
    Ok(Floor {
        in_flight,
        rabbitmq_round_trips_per_s: rabbitmq(amqp, in_flight, duration).await?,
        postgres_hot_updates_per_s: postgres(database, in_flight, duration, 1).await?,
        postgres_spread_updates_per_s: postgres(database, in_flight, duration, 10_000).await?,
    })
}

async fn rabbitmq(url: &str, in_flight: usize, duration: Duration) -> anyhow::Result<f64> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let publisher = conn.create_channel().await?;
    let consumer = conn.create_channel().await?;
    let queue = format!("ordermesh-bench.floor.{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let options = QueueDeclareOptions { durable: true, auto_delete: true, ..Default::default() };
    publisher.queue_declare(queue.as_str().into(), options, FieldTable::default()).await?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;
    consumer.basic_qos(u16::try_from(in_flight).unwrap_or(u16::MAX), BasicQosOptions::default()).await?;
    let mut deliveries = consumer
        .basic_consume(queue.as_str().into(), "floor".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
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
        let confirm = publisher
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        // Confirms are awaited off the publishing path, as a windowed publisher does.
        tokio::spawn(async move {
            let _ = confirm.await;
        });
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    acker.abort();
    let _ = publisher.queue_delete(queue.as_str().into(), Default::default()).await;
    let _ = conn.close(200, "floor done".into()).await;
    Ok(rate)
}

async fn postgres(server: &str, clients: usize, duration: Duration, rows: i64) -> anyhow::Result<f64> {
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
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..clients)
            .map(|c| {
                let (pool, done) = (pool.clone(), done.clone());
                tokio::spawn(async move {
                    let mut i = c as i64;
                    while started.elapsed() < duration {
                        i = (i * 7919 + 13) % rows;
                        let reserved =
                            sqlx::query("UPDATE stock SET available = available - 1 WHERE id = $1 AND available >= 1")
                                .bind(i + 1)
                                .execute(&pool)
                                .await;
                        if reserved.is_ok() {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.await;
        }
        let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        pool.close().await;
        Ok::<_, anyhow::Error>(rate)
    }
    .await;
    admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await?;
    result
}
