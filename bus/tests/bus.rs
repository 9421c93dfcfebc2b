//! The bus against the real RabbitMQ and PostgreSQL: bounded retries end in the dead-letter queue with
//! their reason, expired requests are dropped rather than dead-lettered, and an undecodable outbox row
//! is parked without blocking the rows behind it; rows handed to the relay go out without a scan, and those
//! of a writer that died before handing them go out once their claim runs out.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use lapin::{BasicProperties, options::BasicPublishOptions, types::AMQPValue};
use ordermesh_bus::{
    Bus, ConsumerSettings, DEFAULT_AMQP_URL, Outcome, Publisher, Topology, consumer::REASON_HEADER, handler_fn, outbox,
    spawn_consumer,
};
use ordermesh_messages::Envelope;
use ordermesh_telemetry::Metrics;
use tokio::sync::watch;

fn topology() -> Topology {
    Topology::ephemeral(
        format!("test-bus-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        Duration::from_secs(120),
    )
}

async fn channel() -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(DEFAULT_AMQP_URL, Default::default()).await.expect("broker");
    let channel = conn.create_channel().await.unwrap();
    (conn, channel)
}

async fn publish(channel: &lapin::Channel, queue: &str, body: &[u8]) {
    channel.confirm_select(Default::default()).await.unwrap();
    channel
        .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, BasicProperties::default())
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Waits up to 10 s for a message on `queue` and returns it.
async fn next_message(channel: &lapin::Channel, queue: &str) -> lapin::message::BasicGetMessage {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(m) = channel.basic_get(queue.into(), Default::default()).await.unwrap() {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing arrived on {queue}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The reason a dead-lettered message carries (the test fails if it has none).
fn reason_of(dead: &lapin::message::BasicGetMessage) -> String {
    let headers = dead.delivery.properties.headers().clone().unwrap_or_default();
    match headers.inner().get(REASON_HEADER) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("no reason header: {other:?}"),
    }
}

async fn message_count(channel: &lapin::Channel, queue: &str) -> u32 {
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    channel.queue_declare(queue.into(), passive, Default::default()).await.unwrap().message_count()
}

async fn start(topology: &Topology) -> (Bus, Arc<Publisher>, watch::Sender<bool>) {
    let (stop_tx, stop) = watch::channel(false);
    let bus = Bus::start(DEFAULT_AMQP_URL.into(), topology.clone(), Metrics::new("bus-test"), stop);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !bus.is_connected() {
        assert!(tokio::time::Instant::now() < deadline, "bus not connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let publisher = Arc::new(Publisher::new(bus.clone()));
    (bus, publisher, stop_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_is_dead_lettered_with_its_reason_after_the_retry_bound() {
    let topology = topology();
    let (bus, publisher, stop) = start(&topology).await;
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let handler = handler_fn(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Outcome::Retry("the database is down".into()) }
    });
    let settings = ConsumerSettings { max_retries: 2, ..ConsumerSettings::new(4) };
    let consumer = spawn_consumer(bus, publisher, topology.cart_jobs(), settings, handler, stop.subscribe());

    let (conn, channel) = channel().await;
    publish(&channel, &topology.cart_jobs(), &Envelope::new("cart.get", &serde_json::json!({})).to_vec()).await;
    let dead = next_message(&channel, &Topology::dead_letter_queue(&topology.cart_jobs())).await;
    let reason = reason_of(&dead);
    assert!(reason.contains("gave up after 3 attempts") && reason.contains("the database is down"), "{reason}");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "one delivery and two retries, then no more");
    assert_eq!(message_count(&channel, &topology.cart_jobs()).await, 0, "nothing left to loop on the queue");

    let _ = stop.send(true);
    let _ = consumer.await;
    let _ = topology.delete(&channel).await;
    let _ = conn.close(200, "ok".into()).await;
}

/// A message over the size bound is dead-lettered with the reason, and never reaches a handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_bound_is_dead_lettered_unread() {
    let topology = topology();
    let (bus, publisher, stop) = start(&topology).await;
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let handler = handler_fn(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Outcome::Ack }
    });
    let consumer =
        spawn_consumer(bus, publisher, topology.cart_jobs(), ConsumerSettings::new(4), handler, stop.subscribe());

    let (conn, channel) = channel().await;
    let pad = "x".repeat(ordermesh_messages::MAX_MESSAGE_BYTES);
    publish(&channel, &topology.cart_jobs(), &Envelope::new("cart.get", &serde_json::json!({"pad": pad})).to_vec())
        .await;
    let dead = next_message(&channel, &Topology::dead_letter_queue(&topology.cart_jobs())).await;
    let reason = reason_of(&dead);
    assert!(reason.contains("byte bound"), "{reason}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler never saw it");

    let _ = stop.send(true);
    let _ = consumer.await;
    let _ = topology.delete(&channel).await;
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handling_that_hangs_is_stopped_at_its_bound_and_retried_and_holds_up_nothing_behind_it() {
    let topology = topology();
    let (bus, publisher, stop) = start(&topology).await;
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    // The first handling waits for ever (a dependency that never answers); every later one succeeds.
    let handler = handler_fn(move |_| {
        let call = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if call == 0 {
                std::future::pending::<()>().await;
            }
            Outcome::Ack
        }
    });
    let settings = ConsumerSettings { handler_timeout: Duration::from_millis(500), ..ConsumerSettings::new(1) };
    let queue = topology.cart_jobs();
    let consumer = spawn_consumer(bus, publisher, queue.clone(), settings, handler, stop.subscribe());

    let (conn, channel) = channel().await;
    publish(&channel, &queue, &Envelope::new("cart.get", &serde_json::json!({})).to_vec()).await;
    publish(&channel, &queue, &Envelope::new("cart.get", &serde_json::json!({})).to_vec()).await;
    // With one delivery in flight at a time, the second message is handled only once the first is let go:
    // the hanging one was stopped and handed back (the retry succeeds), the other went through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while calls.load(Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "handled {} times: the hang held the queue",
            calls.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while message_count(&channel, &queue).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "messages left on the queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(message_count(&channel, &Topology::dead_letter_queue(&queue)).await, 0, "nothing dead-lettered");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "the hanging one once, its retry, and the other");

    let _ = stop.send(true);
    let _ = consumer.await;
    let _ = topology.delete(&channel).await;
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_request_is_dropped_unhandled_and_never_dead_lettered() {
    let topology = topology();
    let (bus, publisher, stop) = start(&topology).await;
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let handler = handler_fn(move |m| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Outcome::Reply(Envelope::new("reply", &m.envelope.kind)) }
    });
    let queue = topology.cart_jobs();
    let (conn, channel) = channel().await;
    let expired = Envelope::new("cart.add_item", &serde_json::json!({}))
        .with_deadline(chrono::Utc::now() - chrono::Duration::seconds(1));
    let live = Envelope::new("cart.get", &serde_json::json!({}));
    publish(&channel, &queue, &expired.to_vec()).await;
    publish(&channel, &queue, &live.to_vec()).await;
    let metrics = bus.metrics().clone();
    let consumer = spawn_consumer(bus, publisher, queue.clone(), ConsumerSettings::new(1), handler, stop.subscribe());

    // Prefetch 1 and FIFO: once the live one was handled, the expired one (ahead of it) was taken care of.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the live request was never handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the expired request never reached the handler");
    let scraped = metrics.render().await;
    let counted = format!("amqp_requests_expired_total{{queue=\"{queue}\",kind=\"cart.add_item\"}} 1");
    assert!(scraped.contains(&counted), "the drop was counted: {scraped}");
    let consumed = format!("amqp_messages_consumed_total{{queue=\"{queue}\",kind=\"cart.get\"}} 1");
    assert!(scraped.contains(&consumed), "the live one was counted as consumed: {scraped}");
    assert_eq!(message_count(&channel, &Topology::dead_letter_queue(&queue)).await, 0, "no dead letter");

    let _ = stop.send(true);
    let _ = consumer.await;
    let _ = topology.delete(&channel).await;
    let _ = conn.close(200, "ok".into()).await;
}

/// A database of its own with the outbox exactly as the services create it; returns it and its name.
async fn outbox_database() -> (sqlx::PgPool, String) {
    let (url, name) = ordermesh_testkit::testdb::unique_database("om_test_bus_");
    let pool = ordermesh_db::connect(&ordermesh_config::DatabaseSettings::new(url)).await.unwrap();
    for sql in [
        include_str!("../../migrations/cart/20261122000001_carts.sql"),
        include_str!("../../migrations/cart/20261129000001_outbox_claims.sql"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
    }
    (pool, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_outbox_row_is_parked_and_the_rows_behind_it_are_published() {
    let (pool, name) = outbox_database().await;
    let topology = topology();
    let (_bus, publisher, stop) = start(&topology).await;
    let queue = topology.checkout_jobs();

    sqlx::query(
        "INSERT INTO outbox (exchange, routing_key, message_id, body) VALUES ('', $1, gen_random_uuid(), 'garbage')",
    )
    .bind(&queue)
    .execute(&pool)
    .await
    .unwrap();
    // Stored pretty-printed, as no encoder of ours writes it: a relay that decoded and encoded it again would
    // send other bytes.
    let good = Envelope::new("order.place", &serde_json::json!({"n": 1, "a": [1, 2]}));
    let stored = serde_json::to_vec_pretty(&good).unwrap();
    assert_ne!(stored, good.to_vec());
    sqlx::query("INSERT INTO outbox (exchange, routing_key, message_id, body) VALUES ('', $1, $2, $3)")
        .bind(&queue)
        .bind(good.message_id)
        .bind(&stored)
        .execute(&pool)
        .await
        .unwrap();

    assert_eq!(outbox::relay_batch(&pool, &publisher).await.unwrap(), 2);
    let (amqp, channel) = channel().await;
    let delivered = next_message(&channel, &queue).await;
    // The stored bytes go out as they are, with the envelope's ids in the message's properties.
    assert_eq!(delivered.delivery.data, stored, "published as stored, not encoded again");
    let props = &delivered.delivery.properties;
    assert_eq!(props.message_id().as_ref().map(|id| id.as_str().to_owned()), Some(good.message_id.to_string()));
    assert_eq!(props.kind().as_ref().map(|k| k.as_str().to_owned()), Some("order.place".to_owned()));
    assert_eq!(props.delivery_mode(), &Some(2), "persistent");
    let rows: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT parked_reason FROM outbox").fetch_all(&pool).await.unwrap();
    assert_eq!(rows.len(), 1, "the good row was deleted once published");
    assert!(rows[0].0.as_deref().is_some_and(|r| r.contains("not a valid envelope")), "{rows:?}");
    assert_eq!(outbox::relay_batch(&pool, &publisher).await.unwrap(), 0, "a parked row is not read again");

    let _ = stop.send(true);
    let _ = topology.delete(&channel).await;
    let _ = amqp.close(200, "ok".into()).await;
    pool.close().await;
    ordermesh_testkit::testdb::drop_database(&name).await;
}

/// An outbox row claimed for a handoff, as the services write them; returns it as the relay sends it, and
/// its claim's end.
async fn claimed_row(pool: &sqlx::PgPool, queue: &str) -> (outbox::Row, chrono::DateTime<chrono::Utc>) {
    let envelope = Envelope::new("order.place", &serde_json::json!({"n": 1}));
    let body = envelope.to_vec_traced(None);
    let (id, until): (i64, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "INSERT INTO outbox (exchange, routing_key, message_id, body, claimed_until)
         VALUES ('', $1, $2, $3, now() + make_interval(secs => $4)) RETURNING id, claimed_until",
    )
    .bind(queue)
    .bind(envelope.message_id)
    .bind(&body)
    .bind(outbox::HANDED_CLAIM_SECS)
    .fetch_one(pool)
    .await
    .unwrap();
    ((id, String::new(), queue.to_owned(), body), until)
}

async fn db_now(pool: &sqlx::PgPool) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar("SELECT now()").fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_rows_go_out_within_their_claim_and_unhanded_ones_once_it_runs_out() {
    let (pool, name) = outbox_database().await;
    let topology = topology();
    let (_bus, publisher, stop) = start(&topology).await;
    let queue = topology.checkout_jobs();
    // A row committed claimed whose writer died before handing it over.
    let ((orphan, ..), orphan_claim) = claimed_row(&pool, &queue).await;
    let handoff = Arc::new(outbox::Handoff::default());
    // No periodic scan in this test: the idle interval is far beyond it.
    let relay = tokio::spawn(outbox::run_relay(
        pool.clone(),
        publisher,
        handoff.clone(),
        Duration::from_secs(600),
        stop.subscribe(),
    ));
    let (amqp, channel) = channel().await;

    let (row, claim) = claimed_row(&pool, &queue).await;
    let handed = row.0;
    handoff.hand(vec![row]);
    let first = next_message(&channel, &queue).await;
    assert!(db_now(&pool).await < claim, "the handed row went out before its claim ran out, so without a scan");
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox ORDER BY id").fetch_all(&pool).await.unwrap();
    assert!(!ids.is_empty() && ids[0] == orphan, "the orphan is still waiting: {ids:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM outbox WHERE id = $1)")
        .bind(handed)
        .fetch_one(&pool)
        .await
        .unwrap()
    {
        assert!(tokio::time::Instant::now() < deadline, "the handed row was not deleted after publishing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The orphan goes out once its claim runs out (a relay sleeps until the first claim's end).
    let second = next_message(&channel, &queue).await;
    assert!(db_now(&pool).await >= orphan_claim, "the orphan waited for its claim");
    assert_ne!(first.delivery.data, second.delivery.data);
    assert_eq!(message_count(&channel, &queue).await, 0, "each row went out once");

    let _ = stop.send(true);
    relay.await.unwrap();
    let _ = topology.delete(&channel).await;
    let _ = amqp.close(200, "ok".into()).await;
    pool.close().await;
    ordermesh_testkit::testdb::drop_database(&name).await;
}
