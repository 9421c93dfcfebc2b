//! `spawn_mesh()`: a whole ordermesh for one test, with typed helpers and teardown.

use std::{sync::Once, time::Duration};

use ordermesh_bus::{DEFAULT_AMQP_URL, Topology};
use ordermesh_config::{DatabaseSettings, SharedSettings};
use ordermesh_proto::inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient};
use ordermesh_testkit::testdb;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

const DB_PREFIX: &str = "om_test_e2e_";

/// A service running in the test's runtime, stoppable on its own.
pub struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn spawn<F>(run: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> F) -> Self
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(Box::pin(async move {
            let _ = stopped.await;
        })));
        Self { stop, task }
    }

    /// Stops the service and waits for it (bounded).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

/// How to shape the mesh.
pub struct Options {
    /// cart-manager instances.
    pub carts: usize,
    /// api-gateway instances.
    pub gateways: usize,
    /// Gateway deadline.
    pub request_timeout: Duration,
    /// Adjusts checkout-manager's config (retry pacing).
    pub checkout: Box<dyn FnOnce(&mut checkout_manager::Config) + Send>,
    /// Adjusts payment-gateway's config (payment faults).
    pub payment: Box<dyn FnOnce(&mut payment_gateway::Config) + Send>,
    /// Point the gateway at a broker that is not there.
    pub gateway_amqp_url: Option<String>,
    /// Point every service at this broker URL (a link the test can cut).
    pub amqp_url: Option<String>,
    /// The gateway's fallback poll of waiting order reads.
    pub gateway_wait_poll: Option<Duration>,
    /// Point cart-manager and checkout-manager at an inventory that is not there.
    pub inventory_url: Option<String>,
    /// The gateway's admission limit of cart and checkout requests.
    pub gateway_max_in_flight: Option<usize>,
    /// The gateway's limit of orders accepted and not yet final, beyond which adds wait.
    pub gateway_max_open_orders: Option<usize>,
    /// Gateways ask for API keys (from a database of the test's own, `TestMesh::gateway_db`).
    pub gateway_auth: bool,
    /// Gateways' request rate of a key without its own.
    pub key_rate_per_second: Option<u32>,
    /// Run a notifier sending through this SMTP URL.
    pub smtp_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            carts: 1,
            gateways: 1,
            request_timeout: Duration::from_secs(5),
            checkout: Box::new(|_| {}),
            payment: Box::new(|_| {}),
            gateway_amqp_url: None,
            amqp_url: None,
            gateway_wait_poll: None,
            inventory_url: None,
            gateway_max_in_flight: None,
            gateway_max_open_orders: None,
            gateway_auth: false,
            key_rate_per_second: None,
            smtp_url: None,
        }
    }
}

/// A running mesh owned by one test.
pub struct TestMesh {
    /// Base URLs of the gateways.
    pub gateways: Vec<String>,
    /// HTTP client.
    pub http: reqwest::Client,
    /// gRPC client of inventory.
    pub inventory: InventoryServiceClient<Channel>,
    /// inventory-manager's gRPC URL.
    pub inventory_url: String,
    /// checkout's database, to look at orders.
    pub checkout_db: PgPool,
    /// payment-gateway's database, to look at charges and balances.
    pub payment_db: PgPool,
    /// The gateways' database (API keys), when they ask for keys.
    pub gateway_db: Option<(PgPool, DatabaseSettings)>,
    /// The notifier's database, when one runs.
    pub notifier_db: Option<PgPool>,
    /// Each worker's `/metrics` URL (the gateways serve theirs on their own port).
    pub metrics: Vec<(&'static str, String)>,
    /// The test's names.
    pub topology: Topology,
    /// cart-manager instances, stoppable one by one.
    pub carts: Vec<Running>,
    /// How a cart-manager of this mesh is configured, to start more later.
    cart_config: cart_manager::Config,
    /// cart's database, to look at checkouts.
    pub cart_db: PgPool,
    /// The checkout-manager, stoppable and startable again ([`TestMesh::stop_checkout`]).
    checkout: Option<Running>,
    checkout_config: checkout_manager::Config,
    services: Vec<Running>,
    databases: Vec<String>,
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The services' own log setup, only when asked, so test output stays quiet.
        if std::env::var_os("TEST_LOG").is_some() {
            ordermesh_telemetry::init_logs();
        }
    });
}

/// How long one test may run before the watchdog ends the test binary.
pub const TEST_LIMIT: Duration = Duration::from_secs(300);

/// Starts a mesh with the default shape.
pub async fn spawn_mesh() -> TestMesh {
    spawn_mesh_with(Options::default()).await
}

/// Starts inventory, checkout, `carts` cart-managers and `gateways` gateways, all on fresh names.
pub async fn spawn_mesh_with(options: Options) -> TestMesh {
    init_logs();
    // The longest test takes about a minute; one that hangs must not hold CI for its whole time.
    ordermesh_testkit::watchdog::arm(TEST_LIMIT);
    static STALE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    STALE.get_or_init(|| testdb::drop_stale_databases(DB_PREFIX)).await;

    let namespace = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let topology = Topology::ephemeral(namespace, Duration::from_secs(600));
    let (inv_url, inv_db) = testdb::unique_database(DB_PREFIX);
    let (cart_url, cart_db) = testdb::unique_database(DB_PREFIX);
    let (chk_url, chk_db) = testdb::unique_database(DB_PREFIX);
    let (pay_url, pay_db) = testdb::unique_database(DB_PREFIX);
    let mut databases = vec![inv_db, cart_db, chk_db, pay_db];
    let db = |url: String| DatabaseSettings { max_connections: 8, ..DatabaseSettings::new(url) };
    let amqp_url = options.amqp_url.clone().unwrap_or_else(|| DEFAULT_AMQP_URL.into());
    let shared = |inventory_url: &str| SharedSettings {
        amqp_url: amqp_url.as_str().into(),
        inventory_url: inventory_url.to_owned(),
        inventory_timeout: Duration::from_millis(500),
        ..SharedSettings::default()
    };

    let any_port: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let metrics_url = |addr: std::net::SocketAddr| format!("http://{addr}/metrics");
    let inventory = inventory_manager::Application::build(inventory_manager::Config {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: any_port,
        database: db(inv_url),
        // Inventory's tokens have their own tests (inventory-manager/tests/api/auth.rs) and the nemesis.
        auth: ordermesh_config::AuthMode::Off,
        ..Default::default()
    })
    .await
    .expect("inventory builds");
    let real_inventory_url = format!("http://{}", inventory.local_addr());
    let inventory_url = options.inventory_url.clone().unwrap_or_else(|| real_inventory_url.clone());
    let mut metrics = vec![("inventory-manager", metrics_url(inventory.metrics_addr()))];
    let mut services = vec![Running::spawn(|stop| inventory.run_until_stopped(stop))];

    let mut checkout_config = checkout_manager::Config {
        database: db(chk_url),
        topology: topology.clone(),
        shared: shared(&inventory_url),
        poll: Duration::from_millis(100),
        metrics_addr: any_port,
        ..Default::default()
    };
    checkout_config.saga.retry_base = Duration::from_millis(50);
    checkout_config.saga.max_backoff = Duration::from_millis(500);
    checkout_config.saga.payment_timeout = Duration::from_secs(3);
    checkout_config.saga.inventory_timeout = Duration::from_millis(500);
    (options.checkout)(&mut checkout_config);
    let (checkout, addr) = start_checkout(checkout_config.clone()).await;
    metrics.push(("checkout-manager", metrics_url(addr)));
    // The test's own pool: the service's closes when it stops.
    let checkout_db = ordermesh_db::connect(&checkout_config.database).await.expect("checkout database");

    let mut payment_config = payment_gateway::Config {
        database: db(pay_url),
        topology: topology.clone(),
        shared: shared(&inventory_url),
        metrics_addr: any_port,
        ..Default::default()
    };
    payment_config.simulator.latency = Duration::from_millis(5);
    (options.payment)(&mut payment_config);
    let payment = payment_gateway::Application::build(payment_config).await.expect("payment builds");
    let payment_db = payment.pool().clone();
    metrics.push(("payment-gateway", metrics_url(payment.metrics_addr())));
    services.push(Running::spawn(|stop| payment.run_until_stopped(stop)));

    let cart_config = cart_manager::Config {
        database: db(cart_url.clone()),
        topology: topology.clone(),
        shared: shared(&inventory_url),
        outbox_poll: Duration::from_millis(100),
        metrics_addr: any_port,
        ..Default::default()
    };
    let mut carts = Vec::new();
    for _ in 0..options.carts {
        let (cart, addr) = start_cart(cart_config.clone()).await;
        metrics.push(("cart-manager", metrics_url(addr)));
        carts.push(cart);
    }

    let mut notifier_db = None;
    if let Some(smtp_url) = &options.smtp_url {
        let (url, name) = testdb::unique_database(DB_PREFIX);
        databases.push(name);
        let mut config = notifier::Config {
            database: db(url),
            topology: topology.clone(),
            shared: shared(&inventory_url),
            metrics_addr: any_port,
            ..Default::default()
        };
        config.smtp.url = smtp_url.as_str().into();
        config.smtp.timeout = Duration::from_secs(2);
        let notifier = notifier::Application::build(config).await.expect("notifier builds");
        notifier_db = Some(notifier.pool().clone());
        metrics.push(("notifier", metrics_url(notifier.metrics_addr())));
        services.push(Running::spawn(|stop| notifier.run_until_stopped(stop)));
    }

    let gateway_db = if options.gateway_auth {
        let (url, name) = testdb::unique_database(DB_PREFIX);
        databases.push(name);
        let settings = db(url);
        let pool =
            ordermesh_db::connect_and_migrate(&settings, &api_gateway::keys::MIGRATOR).await.expect("gateway database");
        Some((pool, settings))
    } else {
        None
    };
    let mut gateways = Vec::new();
    for _ in 0..options.gateways {
        let gateway = api_gateway::Application::build(api_gateway::Config {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            shared: SharedSettings {
                amqp_url: options.gateway_amqp_url.clone().unwrap_or_else(|| amqp_url.clone()).into(),
                ..shared(&inventory_url)
            },
            topology: topology.clone(),
            request_timeout: options.request_timeout,
            wait_poll: options.gateway_wait_poll.unwrap_or(Duration::from_secs(1)),
            max_in_flight: options.gateway_max_in_flight.unwrap_or(256),
            max_open_orders: options.gateway_max_open_orders.unwrap_or(256),
            auth: if options.gateway_auth { api_gateway::AuthMode::Required } else { api_gateway::AuthMode::Off },
            database: gateway_db
                .as_ref()
                .map_or_else(|| api_gateway::Config::default().database, |(_, settings)| settings.clone()),
            key_rate_per_second: options.key_rate_per_second.unwrap_or(1_000),
            ..Default::default()
        })
        .await
        .expect("gateway builds");
        gateways.push(format!("http://{}", gateway.local_addr()));
        services.push(Running::spawn(|stop| gateway.run_until_stopped(stop)));
    }

    let channel =
        // Every call of the test's own client has a deadline too: a test fails with a reason, it never hangs.
        Channel::from_shared(real_inventory_url.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("inventory reachable");
    let mesh = TestMesh {
        gateways,
        http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
        inventory: InventoryServiceClient::new(channel),
        inventory_url: real_inventory_url,
        checkout_db,
        payment_db,
        gateway_db,
        notifier_db,
        metrics,
        topology,
        carts,
        cart_db: ordermesh_db::connect_and_migrate(&cart_config.database, &cart_manager::startup::MIGRATOR)
            .await
            .expect("cart database"),
        cart_config,
        checkout: Some(checkout),
        checkout_config,
        services,
        databases,
    };
    if options.gateway_amqp_url.is_none() && options.amqp_url.is_none() {
        mesh.wait_until_gateways_connected().await;
        if options.carts > 0 {
            mesh.wait_until_consuming().await;
        }
    }
    mesh
}

async fn start_cart(config: cart_manager::Config) -> (Running, std::net::SocketAddr) {
    let cart = cart_manager::Application::build(config).await.expect("cart builds");
    let addr = cart.metrics_addr();
    (Running::spawn(|stop| cart.run_until_stopped(stop)), addr)
}

async fn start_checkout(config: checkout_manager::Config) -> (Running, std::net::SocketAddr) {
    let checkout = checkout_manager::Application::build(config).await.expect("checkout builds");
    let addr = checkout.metrics_addr();
    (Running::spawn(|stop| checkout.run_until_stopped(stop)), addr)
}

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
    async fn wait_until_gateways_connected(&self) {
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

    /// Creates a product with `on_hand` units at `price_cents`.
    pub async fn product(&self, id: &str, price_cents: i64, on_hand: i64) {
        self.inventory
            .clone()
            .upsert_product(pb::UpsertProductRequest {
                product_id: id.into(),
                name: format!("Product {id}"),
                price_cents,
                on_hand,
            })
            .await
            .expect("product upserted");
    }

    /// `(on_hand, reserved, available)` of a product.
    pub async fn stock(&self, id: &str) -> (i64, i64, i64) {
        let q = self
            .inventory
            .clone()
            .get_available_quantity(pb::GetAvailableQuantityRequest { product_id: id.into() })
            .await
            .expect("stock readable")
            .into_inner();
        assert_eq!(q.available, q.on_hand - q.reserved);
        assert!(q.reserved >= 0 && q.reserved <= q.on_hand, "{q:?}");
        (q.on_hand, q.reserved, q.available)
    }

    /// POSTs JSON to a gateway path; returns status and body.
    pub async fn post(&self, gateway: usize, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.gateways[gateway]))
            .json(&body)
            .send()
            .await
            .expect("gateway answers");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    /// GETs a path; returns status and body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.expect("gateway answers");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    /// `POST /addToCart`.
    pub async fn add(&self, client: &str, product: &str, quantity: i64) -> (u16, Value) {
        self.post(0, "/addToCart", json!({"clientID": client, "productID": product, "quantity": quantity})).await
    }

    /// `POST /checkOutCart`, expecting 202; returns the order id.
    pub async fn checkout(&self, client: &str) -> String {
        let (status, body) = self.post(0, "/checkOutCart", json!({"clientID": client})).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "accepted");
        body["orderID"].as_str().expect("orderID").to_owned()
    }

    /// Waits (up to 30 s) for the order to be final and returns it.
    pub async fn final_order(&self, order_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.get(&format!("/orders/{order_id}?waitSeconds=10")).await;
            assert_eq!(status, 200, "{body}");
            let s = body["status"].as_str().unwrap_or_default();
            if ["CONFIRMED", "REJECTED", "PAYMENT_DECLINED", "FAILED"].contains(&s) {
                return body;
            }
            assert!(tokio::time::Instant::now() < deadline, "order {order_id} not final after 30 s: {body}");
        }
    }

    /// `service`'s metrics once `holds` is true of them, or as they are after 15 s.
    pub async fn scrape_until(&self, service: &str, holds: impl Fn(&str) -> bool) -> String {
        let url = &self.metrics.iter().find(|(s, _)| *s == service).unwrap().1;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.http.get(url).send().await.unwrap().text().await.unwrap();
            if holds(&text) || tokio::time::Instant::now() >= deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A count from the checkout database (orders, order_steps) for one id.
    pub async fn count(&self, sql: &'static str, id: &str) -> i64 {
        sqlx::query_scalar(sql).bind(id).fetch_one(&self.checkout_db).await.expect(sql)
    }

    /// A count from payment-gateway's database (payment_charges) for one id.
    pub async fn count_payments(&self, sql: &'static str, id: &str) -> i64 {
        sqlx::query_scalar(sql).bind(id).fetch_one(&self.payment_db).await.expect(sql)
    }
}
