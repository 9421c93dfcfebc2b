//! Quorum queues against the real RabbitMQ: a message whose delivery kills its consumer process (kill -9, not
//! an exception) is dead-lettered by the broker after the delivery limit with a reason an operator can read,
//! while the messages around it are handled; a service that meets classic queues stops with the command
//! that fixes it, and that command moves every waiting message into the quorum queues; a list of broker
//! addresses is tried in turn.
//!
//! The consumer that gets killed is this test binary run again as a child process (`child_consumer`, an
//! ignored test that does nothing unless its environment names a namespace), so it runs the real consumer
//! loop of the bus in a process of its own.

use std::{collections::BTreeSet, process::Stdio, time::Duration};

use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, QueueDeclareOptions},
    types::FieldTable,
};
use ordermesh_bus::{
    Bus, ConsumerSettings, DEFAULT_AMQP_URL, MIGRATE_COMMAND, Outcome, Publisher, QueueType, Topology, dead_letters,
    handler_fn, migrate, spawn_consumer,
};
use ordermesh_messages::Envelope;
use ordermesh_telemetry::Metrics;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::watch,
};

/// The child's environment: the namespace of the queues it consumes, and their delivery limit.
const CHILD_NAMESPACE: &str = "QUORUM_TEST_CHILD_NAMESPACE";
const CHILD_LIMIT: &str = "QUORUM_TEST_CHILD_LIMIT";
/// The kind of the message that kills its consumer.
const POISON: &str = "test.poison";

fn namespace() -> String {
    format!("test-quorum-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

async fn channel() -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(DEFAULT_AMQP_URL, Default::default()).await.expect("broker");
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    (conn, channel)
}

async fn publish(channel: &lapin::Channel, queue: &str, body: &[u8]) {
    let props = BasicProperties::default().with_delivery_mode(2);
    let confirm = channel.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, props);
    assert!(!confirm.await.unwrap().await.unwrap().is_nack(), "the broker refused a message for {queue}");
}

async fn depth(channel: &lapin::Channel, queue: &str) -> u32 {
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    channel.queue_declare(queue.into(), passive, FieldTable::default()).await.unwrap().message_count()
}

async fn wait_connected(bus: &Bus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !bus.is_connected() {
        assert!(tokio::time::Instant::now() < deadline, "the bus did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The consumer process: handles the cart queue one message at a time, prints what it handled, and on the
/// poison message says so and hangs until the parent kills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the kill -9 test as its consumer process"]
#[allow(clippy::print_stdout)] // the parent reads what the child handled from its output
async fn child_consumer() {
    let Ok(namespace) = std::env::var(CHILD_NAMESPACE) else { return };
    let limit: u32 = std::env::var(CHILD_LIMIT).expect("limit").parse().expect("a number");
    let topology = Topology::ephemeral(namespace, Duration::from_secs(120)).with_delivery_limit(limit);
    let (_stop_tx, stop) = watch::channel(false);
    let bus = Bus::start(DEFAULT_AMQP_URL.into(), topology.clone(), Metrics::new("quorum-child"), stop.clone());
    let publisher = std::sync::Arc::new(Publisher::new(bus.clone()));
    let handler = handler_fn(|incoming| async move {
        if incoming.envelope.kind == POISON {
            println!("POISON");
            std::future::pending::<()>().await;
        }
        println!("HANDLED {}", incoming.envelope.message_id);
        Outcome::Ack
    });
    let consumer = spawn_consumer(bus, publisher, topology.cart_jobs(), ConsumerSettings::new(1), handler, stop);
    let _ = consumer.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_kills_its_consumer_each_time_is_dead_lettered_after_the_delivery_limit() {
    const LIMIT: u32 = 2;
    let namespace = namespace();
    let topology = Topology::ephemeral(namespace.clone(), Duration::from_secs(120)).with_delivery_limit(LIMIT);
    assert_eq!(topology.queue_type(), QueueType::Quorum);
    let (conn, channel) = channel().await;
    topology.declare(&channel).await.unwrap();
    let queue = topology.cart_jobs();
    let dlq = Topology::dead_letter_queue(&queue);
    let mut expected = BTreeSet::new();
    for i in 0..10 {
        if i == 5 {
            publish(&channel, &queue, &Envelope::new(POISON, &serde_json::json!({})).to_vec()).await;
        }
        let good = Envelope::new("cart.get", &serde_json::json!({ "n": i }));
        expected.insert(good.message_id.to_string());
        publish(&channel, &queue, &good.to_vec()).await;
    }

    let mut handled = BTreeSet::new();
    let mut kills = 0u32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while handled.len() < expected.len() || depth(&channel, &dlq).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "killed {kills} times, handled {handled:?}");
        assert!(kills <= LIMIT + 1, "the poison was delivered {} times, past the limit of {LIMIT}", kills + 1);
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_consumer", "--ignored", "--nocapture", "--test-threads", "1"])
            .env(CHILD_NAMESPACE, &namespace)
            .env(CHILD_LIMIT, LIMIT.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the consumer process starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Until the poison comes (then kill -9), or everything is handled and the broker dead-lettered it.
        loop {
            let line = tokio::select! {
                line = lines.next_line() => line.unwrap(),
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if handled.len() == expected.len() && depth(&channel, &dlq).await > 0 { break }
                    assert!(tokio::time::Instant::now() < deadline, "killed {kills} times, handled {handled:?}");
                    continue;
                }
            };
            // libtest prints "test child_consumer ... " before the first line of output: look inside lines.
            let Some(line) = line else { panic!("the consumer process ended by itself") };
            if line.contains("POISON") {
                child.start_kill().unwrap(); // SIGKILL
                let _ = child.wait().await;
                kills += 1;
                break;
            }
            if let Some(at) = line.find("HANDLED ") {
                handled.insert(line[at + "HANDLED ".len()..].trim().to_owned());
            }
        }
        let _ = child.start_kill();
    }

    assert_eq!(handled, expected, "every other message was handled");
    assert_eq!(kills, LIMIT + 1, "the poison killed its consumer once per delivery, {} deliveries", LIMIT + 1);
    assert_eq!(depth(&channel, &queue).await, 0, "nothing left on the work queue");
    let look = conn.create_channel().await.unwrap();
    let peeked = dead_letters::peek(look, &dlq, 10, &topology).await.unwrap();
    assert_eq!(peeked.depth, 1, "exactly the poison was dead-lettered");
    assert_eq!(
        peeked.reasons,
        vec![Some("delivered 3 times without an answer: its consumer crashed or timed out each time".to_owned())]
    );
    let _ = topology.delete(&channel).await;
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_meeting_classic_queues_stops_naming_the_migration_which_moves_every_message() {
    let namespace = namespace();
    let classic = Topology::ephemeral(namespace.clone(), Duration::from_secs(120)).with_queue_type(QueueType::Classic);
    let quorum = Topology::ephemeral(namespace, Duration::from_secs(120));
    let (conn, channel) = channel().await;
    classic.declare(&channel).await.unwrap();
    let waiting = [
        (classic.cart_jobs(), 3),
        (Topology::dead_letter_queue(&classic.checkout_jobs()), 2),
        (classic.notifier_events(), 1),
    ];
    for (queue, n) in &waiting {
        for i in 0..*n {
            publish(&channel, queue, format!("{queue} #{i}").as_bytes()).await;
        }
    }

    // A service configured for quorum queues gives up once, with the fix in its sentence.
    let (stop_tx, stop) = watch::channel(false);
    let bus = Bus::start(DEFAULT_AMQP_URL.into(), quorum.clone(), Metrics::new("quorum-test"), stop);
    let sentence = tokio::time::timeout(Duration::from_secs(15), bus.fatal()).await.expect("the bus gives up");
    assert!(sentence.contains(MIGRATE_COMMAND), "{sentence}");
    assert!(sentence.contains("x-queue-type"), "the sentence says what differs: {sentence}");
    assert!(!bus.is_connected());
    let _ = stop_tx.send(true);

    let report = migrate::migrate(&conn, &quorum).await.expect("the migration runs");
    let moved: Vec<(String, u64)> =
        report.migrated.iter().filter(|m| m.messages > 0).map(|m| (m.queue.clone(), m.messages)).collect();
    let mut wanted: Vec<(String, u64)> = waiting.iter().map(|(q, n)| (q.clone(), *n)).collect();
    wanted.sort();
    let mut moved_sorted = moved.clone();
    moved_sorted.sort();
    assert_eq!(moved_sorted, wanted, "{}", report.render());
    assert_eq!(report.migrated.len(), 14, "every queue was classic: {}", report.render());

    // The queues are quorum queues now (declaring them so succeeds), holding the same messages in order.
    let check = conn.create_channel().await.unwrap();
    for queue in quorum.work_queues() {
        check
            .queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), quorum.work_queue_args(&queue))
            .await
            .unwrap();
    }
    for (queue, n) in &waiting {
        for i in 0..*n {
            let m = check.basic_get(queue.as_str().into(), Default::default()).await.unwrap().expect("a moved message");
            assert_eq!(String::from_utf8_lossy(&m.delivery.data), format!("{queue} #{i}"));
            m.delivery.ack(Default::default()).await.unwrap();
        }
        assert!(check.basic_get(queue.as_str().into(), Default::default()).await.unwrap().is_none(), "none doubled");
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let holding = conn.create_channel().await.unwrap();
        let gone = holding.queue_declare(migrate::holding_queue(queue).as_str().into(), passive, FieldTable::default());
        assert!(gone.await.is_err(), "the holding queue of {queue} was removed");
    }

    // Run again, it changes nothing; a service now connects.
    let again = migrate::migrate(&conn, &quorum).await.unwrap();
    assert!(again.migrated.is_empty(), "{}", again.render());
    let (stop_tx, stop) = watch::channel(false);
    let bus = Bus::start(DEFAULT_AMQP_URL.into(), quorum.clone(), Metrics::new("quorum-test"), stop);
    wait_connected(&bus).await;
    let _ = stop_tx.send(true);
    let _ = quorum.delete(&check).await;
    let _ = conn.close(200, "ok".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_broker_address_that_answers_is_used() {
    let topology = Topology::ephemeral(namespace(), Duration::from_secs(60));
    // Port 1 refuses; the next address inherits the first one's credentials and virtual host.
    let url = "amqp://guest:guest@127.0.0.1:1/%2f,127.0.0.1:5672".to_owned();
    let (stop_tx, stop) = watch::channel(false);
    let bus = Bus::start(url, topology.clone(), Metrics::new("quorum-test"), stop);
    wait_connected(&bus).await;
    let channel = bus.channel().await.unwrap();
    let _ = topology.delete(&channel).await;
    let _ = stop_tx.send(true);
}
