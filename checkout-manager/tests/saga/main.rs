//! The saga's decisions, one per test: a scripted fake stands in for inventory (behind the `Stock`
//! trait), the database is real and the test's own, and what the saga asks of the payment provider is
//! read from the outbox, where it is written with the state change that asked for it. This file is the harness;
//! the tests are in one module per part of the saga.

mod commit;
mod driver;
mod kept_copy;
mod payment;
mod reserve;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use checkout_manager::{
    config::SagaSettings,
    inventory::{BoxFuture, Held, InventoryFailure, Stock, StockResult},
    orders::{self, Line},
    refunds,
    saga::{Leases, Saga},
    startup::MIGRATOR,
};
use ordermesh_bus::Topology;
use ordermesh_config::DatabaseSettings;
use ordermesh_db::connect_and_migrate;
use ordermesh_messages::{
    ClientId, Envelope, OrderId, ProductId, kinds,
    payloads::{ChargeRequest, OrderLine, PaymentOutcome, PaymentResult, PlaceOrder, RefundDone},
};
use ordermesh_testkit::testdb;
use sqlx::PgPool;

/// Answers each call from its script, then with the default; counts the calls.
#[derive(Debug, Default)]
struct FakeStock {
    reserve: Mutex<VecDeque<StockResult>>,
    commit: Mutex<VecDeque<StockResult>>,
    roll_back: Mutex<VecDeque<StockResult>>,
    calls: Mutex<Vec<&'static str>>,
    /// While set, every call waits for ever (an inventory that takes calls and never answers them).
    hang: std::sync::atomic::AtomicBool,
}

impl FakeStock {
    fn answer(&self, name: &'static str, script: &Mutex<VecDeque<StockResult>>, default: Held) -> StockResult {
        self.calls.lock().unwrap().push(name);
        script.lock().unwrap().pop_front().unwrap_or(Ok(default))
    }

    async fn maybe_hang(&self) {
        if self.hang.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }

    fn calls(&self, name: &str) -> usize {
        self.calls.lock().unwrap().iter().filter(|c| **c == name).count()
    }
}

impl Stock for FakeStock {
    fn reserve<'a>(&'a self, _: &'a str, _: &'a [Line], _: Duration) -> BoxFuture<'a, StockResult> {
        Box::pin(async move {
            self.maybe_hang().await;
            self.answer("reserve", &self.reserve, Held::Held)
        })
    }
    fn commit<'a>(&'a self, _: &'a str) -> BoxFuture<'a, StockResult> {
        Box::pin(async move {
            self.maybe_hang().await;
            self.answer("commit", &self.commit, Held::Committed)
        })
    }
    fn roll_back<'a>(&'a self, _: &'a str) -> BoxFuture<'a, StockResult> {
        Box::pin(async move { self.answer("roll_back", &self.roll_back, Held::Released) })
    }
}

struct Fixture {
    saga: Saga,
    stock: Arc<FakeStock>,
    pool: PgPool,
    database: String,
}

fn settings() -> SagaSettings {
    SagaSettings {
        max_payment_attempts: 3,
        payment_timeout: Duration::from_secs(60),
        retry_base: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
        max_reserve_attempts: 3,
        lease: Duration::from_millis(900),
        reservation_ttl: Duration::from_secs(60),
        inventory_timeout: Duration::from_secs(1),
        concurrency: 4,
        step_timeout: Duration::from_secs(10),
    }
}

async fn fixture(settings: SagaSettings) -> Fixture {
    let (url, database) = testdb::unique_database("om_test_saga_");
    let pool = connect_and_migrate(&DatabaseSettings::new(url), &MIGRATOR).await.expect("checkout database");
    let stock = Arc::new(FakeStock::default());
    let saga = Saga {
        pool: pool.clone(),
        inventory: stock.clone(),
        topology: Topology::ephemeral("saga-test", Duration::from_secs(60)),
        leases: Arc::new(Leases::default()),
        awaiting: Arc::default(),
        settings,
        outbox: Arc::default(),
        driver_alarm: Arc::default(),
        metrics: checkout_manager::metrics::SagaMetrics::register(&ordermesh_telemetry::Metrics::new(
            "checkout-manager",
        )),
    };
    Fixture { saga, stock, pool, database }
}

impl Fixture {
    fn new_order() -> PlaceOrder {
        PlaceOrder {
            order_id: OrderId::generate(),
            client_id: ClientId::parse("ada").unwrap(),
            lines: vec![OrderLine { product_id: ProductId::parse("mug").unwrap(), quantity: 2, unit_price_cents: 500 }],
            total_cents: 1000,
            created_at: chrono::Utc::now(),
            channel: ordermesh_messages::Channel::parse("phone").unwrap(),
        }
    }

    /// The routing keys of the order's events in the outbox, oldest first.
    async fn events(&self, order_id: &str) -> Vec<String> {
        let bodies: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT routing_key, body FROM outbox WHERE exchange = $1 ORDER BY id")
                .bind(self.saga.topology.order_events())
                .fetch_all(&self.pool)
                .await
                .unwrap();
        bodies
            .into_iter()
            .filter(|(_, body)| Envelope::from_slice(body).unwrap().correlation_id.as_deref() == Some(order_id))
            .map(|(key, _)| key)
            .collect()
    }

    async fn timeline(&self, order_id: &str) -> Vec<(String, String)> {
        sqlx::query_as("SELECT step, outcome FROM order_steps WHERE order_id = $1 ORDER BY id")
            .bind(order_id)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    async fn place(&self) -> String {
        let order = Self::new_order();
        // Due at once (no lease), so the test drives it as the driver would.
        let placed = orders::place(&self.pool, &self.saga.topology, &order, Duration::ZERO).await.unwrap();
        assert!(placed.is_some());
        order.order_id.to_string()
    }

    /// Takes in a new order as `order.place` does (reserved, charge asked for); returns its id.
    async fn take_in(&self) -> String {
        let order = Self::new_order();
        assert!(self.saga.take_in(&order).await.unwrap(), "a new order is taken in");
        order.order_id.to_string()
    }

    /// Drives until nothing is due now (retries with a 1 ms backoff included).
    async fn drive_all(&self) {
        drive_with(&self.saga, &self.pool).await;
    }

    async fn make_due(&self, order_id: &str) {
        sqlx::query("UPDATE orders SET next_action_at = now() WHERE order_id = $1")
            .bind(order_id)
            .execute(&self.pool)
            .await
            .unwrap();
    }

    async fn status(&self, order_id: &str) -> String {
        sqlx::query_scalar("SELECT status FROM orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The messages the saga asked to send to the payment provider, oldest first.
    async fn to_provider(&self) -> Vec<Envelope> {
        let bodies: Vec<Vec<u8>> = sqlx::query_scalar("SELECT body FROM outbox WHERE routing_key = $1 ORDER BY id")
            .bind(self.saga.topology.payment_requests())
            .fetch_all(&self.pool)
            .await
            .unwrap();
        bodies.iter().map(|b| Envelope::from_slice(b).unwrap()).collect()
    }

    async fn pay(&self, order_id: &str, attempt: i32, outcome: PaymentOutcome) {
        let result = PaymentResult {
            payment_id: order_id.to_owned(),
            order_id: OrderId::parse(order_id).unwrap(),
            attempt,
            outcome,
        };
        self.saga.on_payment_result(&result).await.unwrap();
    }

    async fn done(self) {
        self.pool.close().await;
        testdb::drop_database(&self.database).await;
    }
}

fn kinds_of(messages: &[Envelope]) -> Vec<&str> {
    messages.iter().map(|m| m.kind.as_str()).collect()
}

/// Claims what is due and advances it through `saga`, as its driver does, until nothing is due now (retries
/// with a 1 ms backoff included).
async fn drive_with(saga: &Saga, pool: &PgPool) {
    for _ in 0..20 {
        for due in orders::claim_due(pool, 100, saga.settings.lease).await.unwrap() {
            saga.advance(due).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
