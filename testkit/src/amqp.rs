//! Bytes put on a queue by hand, as a replayed, duplicated or hostile sender would: what a test publishes
//! around the mesh's own publishers.

use lapin::{BasicProperties, Connection, options::BasicPublishOptions};

/// Publishes `body` as it is, persistent, to `queue` through the default exchange of the broker at `url`, and
/// waits for the broker's confirm; panics if the broker refuses it or cannot be reached (a test's setup).
pub async fn publish_raw(url: &str, queue: &str, body: &[u8]) {
    let conn = Connection::connect(url, Default::default()).await.unwrap_or_else(|e| panic!("RabbitMQ at {url}: {e}"));
    let channel = conn.create_channel().await.expect("a channel");
    channel.confirm_select(Default::default()).await.expect("confirm mode");
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("published")
        .await
        .expect("confirmed");
    assert!(!confirm.is_nack(), "RabbitMQ refused the message for {queue}");
    let _ = conn.close(200, "ok".into()).await;
}
