//! `spawn_inventory()`: a fresh database, the real server on port 0, a connected client, and teardown.

use std::{sync::Once, time::Duration};

use inventory_manager::{Application, Config};
use ordermesh_db::DatabaseSettings;
use ordermesh_proto::inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient};
use ordermesh_testkit::testdb;
use sqlx::PgPool;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, transport::Channel};

/// Test databases are named `om_test_inv_<unix seconds>_<random>` so stale ones can be found and dropped.
const DB_PREFIX: &str = "om_test_inv_";

/// A running inventory-manager owned by one test.
pub struct TestInventory {
    /// Connected gRPC client.
    pub client: InventoryServiceClient<Channel>,
    /// The bound address, for clients of other services (health, reflection).
    pub addr: std::net::SocketAddr,
    /// A pool on the test's database, to check what is stored.
    pub pool: PgPool,
    db_name: String,
    stop: oneshot::Sender<()>,
    server: JoinHandle<anyhow::Result<()>>,
}

/// Starts inventory-manager with the test defaults.
pub async fn spawn_inventory() -> TestInventory {
    spawn_inventory_with(|_| {}).await
}

/// Starts inventory-manager after `tweak` has adjusted the test config.
pub async fn spawn_inventory_with(tweak: impl FnOnce(&mut Config)) -> TestInventory {
    init_logs();
    drop_stale_once().await;
    let (database_url, db_name) = testdb::unique_database(DB_PREFIX);

    let mut config = Config {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        database: DatabaseSettings { max_connections: 8, ..DatabaseSettings::new(database_url) },
        // Tokens have their own tests (auth.rs), which turn them on.
        auth: ordermesh_config::AuthMode::Off,
        ..Config::default()
    };
    tweak(&mut config);
    let app = Application::build(config).await.expect("inventory-manager builds");
    let addr = app.local_addr();
    let pool = app.pool().clone();
    let (stop, stopped) = oneshot::channel();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.expect("client connects");
    TestInventory { client: InventoryServiceClient::new(channel), addr, pool, db_name, stop, server }
}

impl TestInventory {
    /// Stops the server and drops the database. A test that panics skips this, keeping its database to look at.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.server)
            .await
            .expect("server stops within its grace period")
            .unwrap()
            .unwrap();
        testdb::drop_database(&self.db_name).await;
    }

    /// Creates a product with `on_hand` units at 1.00 each.
    pub async fn product(&mut self, id: &str, on_hand: i64) -> pb::Product {
        self.client
            .upsert_product(pb::UpsertProductRequest {
                product_id: id.into(),
                name: format!("Product {id}"),
                price_cents: 100,
                on_hand,
            })
            .await
            .expect("upsert succeeds")
            .into_inner()
    }

    /// The stock counters of a product, checking the invariants on the way.
    pub async fn stock(&mut self, id: &str) -> pb::AvailableQuantity {
        let q = self
            .client
            .get_available_quantity(pb::GetAvailableQuantityRequest { product_id: id.into() })
            .await
            .expect("stock readable")
            .into_inner();
        assert_eq!(q.available, q.on_hand - q.reserved, "available = on_hand - reserved for {id}: {q:?}");
        assert!(0 <= q.reserved && q.reserved <= q.on_hand, "0 <= reserved <= on_hand for {id}: {q:?}");
        q
    }

    /// Reserves with the default TTL.
    pub async fn reserve(&mut self, id: &str, lines: &[(&str, i64)]) -> Result<pb::Reservation, tonic::Status> {
        self.client.reserve(reserve_request(id, lines, 0)).await.map(tonic::Response::into_inner)
    }

    /// Commits a reservation.
    pub async fn commit(&mut self, id: &str) -> Result<pb::Reservation, tonic::Status> {
        self.client
            .commit_reservation(pb::CommitReservationRequest { reservation_id: id.into() })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Rolls a reservation back.
    pub async fn roll_back(&mut self, id: &str) -> Result<pb::Reservation, tonic::Status> {
        self.client
            .roll_back_reservation(pb::RollBackReservationRequest { reservation_id: id.into() })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Reads a reservation.
    pub async fn reservation(&mut self, id: &str) -> Result<pb::Reservation, tonic::Status> {
        self.client
            .get_reservation(pb::GetReservationRequest { reservation_id: id.into() })
            .await
            .map(tonic::Response::into_inner)
    }
}

/// A `Reserve` request from `(product, quantity)` pairs.
pub fn reserve_request(id: &str, lines: &[(&str, i64)], ttl_seconds: i64) -> pb::ReserveRequest {
    pb::ReserveRequest {
        reservation_id: id.into(),
        lines: lines.iter().map(|(p, q)| pb::ReservationLine { product_id: (*p).into(), quantity: *q }).collect(),
        ttl_seconds,
    }
}

/// Asserts a call failed with `code`, and returns the status for further checks.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code) -> tonic::Status {
    match result {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt().with_env_filter("info,inventory_manager=debug").with_test_writer().init();
        }
    });
}

/// Drops what failed runs left behind, once per test process.
async fn drop_stale_once() {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| testdb::drop_stale_databases(DB_PREFIX)).await;
}
