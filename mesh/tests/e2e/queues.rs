//! An existing deployment's classic queues, met by the real `ordermesh` binary: it stops once, naming the
//! command that fixes it, and `ordermesh queues migrate` turns the queues into quorum queues with every
//! waiting message moved.

use std::time::Duration;

use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, QueueDeclareOptions},
};
use ordermesh_bus::{DEFAULT_AMQP_URL, MIGRATE_COMMAND, QueueType, Topology};
use ordermesh_testkit::testdb;

const DB_PREFIX: &str = "om_test_queues_";

/// The whole mesh's settings on fresh databases, any free ports and `namespace`.
fn mesh_env(namespace: &str, databases: &mut Vec<String>) -> Vec<(String, String)> {
    let mut env = vec![
        ("ORDERMESH_NAMESPACE".to_owned(), namespace.to_owned()),
        ("AMQP_URL".to_owned(), DEFAULT_AMQP_URL.to_owned()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ];
    for service in ["INVENTORY", "CART", "CHECKOUT", "PAYMENT", "NOTIFIER", "GATEWAY"] {
        let (url, name) = testdb::unique_database(DB_PREFIX);
        databases.push(name);
        env.push((format!("{service}_DATABASE_URL"), url));
    }
    for addr in [
        "GATEWAY_LISTEN_ADDR",
        "INVENTORY_LISTEN_ADDR",
        "INVENTORY_METRICS_ADDR",
        "CART_METRICS_ADDR",
        "CHECKOUT_METRICS_ADDR",
        "PAYMENT_METRICS_ADDR",
        "NOTIFIER_METRICS_ADDR",
    ] {
        env.push((addr.to_owned(), "127.0.0.1:0".to_owned()));
    }
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_stops_once_on_classic_queues_and_the_migration_moves_their_messages_into_quorum_queues() {
    let namespace = format!("test-classic-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    // What an older deployment left: classic queues under the production names, jobs waiting in one.
    let classic = Topology::new(namespace.clone()).with_queue_type(QueueType::Classic);
    let quorum = Topology::new(namespace.clone());
    let conn = lapin::Connection::connect(DEFAULT_AMQP_URL, Default::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    classic.declare(&channel).await.unwrap();
    for i in 0..3 {
        let props = BasicProperties::default().with_delivery_mode(2);
        let body = format!("waiting job {i}");
        let publish = channel.basic_publish(
            "".into(),
            quorum.cart_jobs().as_str().into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        );
        publish.await.unwrap().await.unwrap();
    }

    let mut databases = Vec::new();
    let env = mesh_env(&namespace, &mut databases);
    let run =
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ordermesh")).envs(env.clone()).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(90), run).await.expect("the mesh stops by itself").unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "the mesh ran on classic queues: {text}");
    assert!(text.contains(&format!("run `{MIGRATE_COMMAND}`")), "the command is named: {text}");

    let migrate = tokio::process::Command::new(env!("CARGO_BIN_EXE_ordermesh"))
        .args(["queues", "migrate"])
        .envs(env)
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&migrate.stdout).into_owned();
    assert!(migrate.status.success(), "{report}{}", String::from_utf8_lossy(&migrate.stderr));
    assert!(report.contains(&format!("migrated {}: 3 message(s) moved", quorum.cart_jobs())), "{report}");

    // Declared as quorum queues now, and the jobs are there, once each.
    let check = conn.create_channel().await.unwrap();
    let queue = quorum.cart_jobs();
    let declared =
        check.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), quorum.work_queue_args(&queue));
    assert_eq!(declared.await.unwrap().message_count(), 3);

    let _ = quorum.delete(&check).await;
    let _ = conn.close(200, "ok".into()).await;
    for name in databases {
        testdb::drop_database(&name).await;
    }
}
