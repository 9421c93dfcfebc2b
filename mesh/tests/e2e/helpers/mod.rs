//! `spawn_mesh()`: a whole ordermesh for one test, with typed helpers and teardown. The mesh's shape and its
//! handle are here; `spawn` starts it, `control` stops and starts its parts and tears it down, `shop` is the
//! shop's API and the databases as a test asks them.

mod control;
mod shop;
mod spawn;

// Each test binary that includes these helpers uses a part of them.
#[allow(unused_imports)]
pub use spawn::{spawn_mesh, spawn_mesh_with};

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
