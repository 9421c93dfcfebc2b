//! A running test mesh's parts stopped and started, its queues watched, and the whole torn down.

use super::{
    spawn::{start_cart, start_checkout},
    *,
};

impl TestMesh {
    /// Stops the checkout-manager (its queues stay, and fill).
    pub async fn stop_checkout(&mut self) {
        if let Some(checkout) = self.checkout.take() {
            checkout.stop().await;
        }
    }

    /// Starts the checkout-manager again and waits until it consumes.
    pub async fn start_checkout(&mut self) {
        self.stop_checkout().await;
        self.checkout = Some(start_checkout(self.checkout_config.clone()).await.0);
        self.wait_until_consuming().await;
    }

    /// Starts one more cart-manager and waits until it consumes.
    pub async fn start_cart(&mut self) {
        self.carts.push(start_cart(self.cart_config.clone()).await.0);
        self.wait_until_consuming().await;
    }

    /// Messages ready on a queue (not counting those delivered and not yet acked).
    pub async fn ready(&self, queue: &str) -> u32 {
        let count = async {
            let conn =
                lapin::Connection::connect(DEFAULT_AMQP_URL, lapin::ConnectionProperties::default()).await.unwrap();
            let channel = conn.create_channel().await.unwrap();
            let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
            let count = channel.queue_declare(queue.into(), passive, Default::default()).await.unwrap().message_count();
            let _ = conn.close(200, "ok".into()).await;
            count
        };
        tokio::time::timeout(Duration::from_secs(10), count)
            .await
            .expect("the broker tells a queue's length within 10 s")
    }

    /// Waits until `queue` holds nothing, neither ready nor delivered and unacked: every message put
    /// on it has been handled. (`rabbitmqctl`, since AMQP itself does not tell unacked counts.)
    pub async fn wait_until_drained(&self, queue: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let out = tokio::process::Command::new("rabbitmqctl")
                .args(["-q", "list_queues", "name", "messages", "--no-table-headers"])
                .output()
                .await
                .expect("rabbitmqctl runs");
            let listing = String::from_utf8_lossy(&out.stdout);
            let messages = listing
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .find(|(name, _)| *name == queue)
                .and_then(|(_, n)| n.trim().parse::<u64>().ok());
            if messages == Some(0) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{queue} still holds {messages:?} messages after 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The first gateway's base URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateways[0])
    }

    /// Waits until the workers have declared the topology and are consuming (they connect in the background).
    pub async fn wait_until_consuming(&self) {
        let conn = lapin::Connection::connect(DEFAULT_AMQP_URL, lapin::ConnectionProperties::default()).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        for queue in [
            self.topology.cart_jobs(),
            self.topology.checkout_jobs(),
            self.topology.payment_results(),
            self.topology.payment_requests(),
        ] {
            loop {
                let channel = conn.create_channel().await.unwrap();
                let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
                if let Ok(q) = channel.queue_declare(queue.as_str().into(), passive, Default::default()).await
                    && q.consumer_count() > 0
                {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "{queue} has no consumer after 15 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let _ = conn.close(200, "ok".into()).await;
    }

    /// Waits until every gateway reports its RabbitMQ connection up.
    pub(super) async fn wait_until_gateways_connected(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        for gateway in &self.gateways {
            loop {
                let ready: Value =
                    self.http.get(format!("{gateway}/readyz")).send().await.unwrap().json().await.unwrap();
                if ready["rabbitmq"] == true {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "gateway {gateway} not connected after 15 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Stops everything, removes the test's queues and exchanges, and drops its databases.
    pub async fn stop(self) {
        for running in self.carts.into_iter().chain(self.checkout).chain(self.services) {
            running.stop().await;
        }
        // Each step of the teardown is bounded: a test must never hang on cleaning up after itself.
        let bound = Duration::from_secs(10);
        let delete_names = async {
            if let Ok(conn) = lapin::Connection::connect(DEFAULT_AMQP_URL, lapin::ConnectionProperties::default()).await
            {
                if let Ok(channel) = conn.create_channel().await {
                    let _ = self.topology.delete(&channel).await;
                }
                let _ = conn.close(200, "ok".into()).await;
            }
        };
        let _ = tokio::time::timeout(bound, delete_names).await;
        for pool in [&self.checkout_db, &self.payment_db, &self.cart_db] {
            let _ = tokio::time::timeout(bound, pool.close()).await;
        }
        for db in &self.databases {
            tokio::time::timeout(bound, testdb::drop_database(db))
                .await
                .expect("a test database is dropped within 10 s");
        }
    }
}
