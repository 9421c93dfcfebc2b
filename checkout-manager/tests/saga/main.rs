//! The saga's decisions, one per test: a scripted fake stands in for inventory (behind the `Stock`
//! trait), the database is real and the test's own, and what the saga asks of the payment provider is
//! read from the outbox, where it is written with the state change that asked for it.

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

#[tokio::test]
async fn insufficient_stock_rejects_the_order_and_asks_for_no_money() {
    let f = fixture(settings()).await;
    f.stock.reserve.lock().unwrap().push_back(Err(InventoryFailure::Refused("insufficient stock for mug".into())));
    let id = f.place().await;
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "REJECTED");
    assert!(f.to_provider().await.is_empty());
    assert_eq!(f.stock.calls("roll_back"), 0, "nothing was held");
    f.done().await;
}

#[tokio::test]
async fn a_hold_taken_by_other_lines_is_rolled_back_rather_than_left_to_expire() {
    let f = fixture(settings()).await;
    f.stock
        .reserve
        .lock()
        .unwrap()
        .push_back(Err(InventoryFailure::Conflict("reservation exists with other lines".into())));
    let id = f.place().await;
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "FAILED");
    assert_eq!(f.stock.calls("roll_back"), 1);
    f.done().await;
}

#[tokio::test]
async fn inventory_down_is_retried_up_to_the_limit_then_the_order_fails_with_the_hold_released() {
    let f = fixture(settings()).await;
    for _ in 0..5 {
        f.stock.reserve.lock().unwrap().push_back(Err(InventoryFailure::Transient("unavailable".into())));
    }
    let id = f.place().await;
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "FAILED");
    assert_eq!(f.stock.calls("reserve"), 3, "max_reserve_attempts");
    assert_eq!(f.stock.calls("roll_back"), 1, "a hold taken unheard of is released");
    f.done().await;
}

#[tokio::test]
async fn the_charge_goes_out_with_the_pending_state_and_is_asked_again_after_the_timeout() {
    let f = fixture(settings()).await;
    let id = f.place().await;
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "PAYMENT_PENDING");
    let sent = f.to_provider().await;
    assert_eq!(kinds_of(&sent), [kinds::PAYMENT_CHARGE]);
    let charge: ChargeRequest = sent[0].payload().unwrap();
    assert_eq!((charge.attempt, charge.amount_cents, charge.payment_id.as_str()), (1, 1000, id.as_str()));

    // No answer within the payment timeout: the same charge (same payment id) is asked again.
    f.make_due(&id).await;
    f.drive_all().await;
    let sent = f.to_provider().await;
    assert_eq!(kinds_of(&sent), [kinds::PAYMENT_CHARGE, kinds::PAYMENT_CHARGE]);
    assert_eq!(sent[1].payload::<ChargeRequest>().unwrap().attempt, 2);

    f.pay(&id, 2, PaymentOutcome::Succeeded).await;
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "CONFIRMED");
    assert_eq!(f.stock.calls("commit"), 1);
    f.done().await;
}

#[tokio::test]
async fn technical_failures_are_retried_up_to_the_limit_then_the_order_fails_without_a_refund() {
    let f = fixture(settings()).await;
    let id = f.place().await;
    f.drive_all().await;
    for attempt in 1..=3 {
        f.pay(&id, attempt, PaymentOutcome::TechnicalFailure { reason: "provider down".into() }).await;
        f.drive_all().await;
    }
    assert_eq!(f.status(&id).await, "FAILED");
    let sent = f.to_provider().await;
    assert_eq!(kinds_of(&sent), [kinds::PAYMENT_CHARGE; 3], "three attempts, and nothing was taken to give back");
    assert_eq!(f.stock.calls("roll_back"), 1);
    f.done().await;
}

#[tokio::test]
async fn a_success_that_arrives_after_the_saga_gave_up_is_refunded() {
    let f = fixture(SagaSettings { max_payment_attempts: 1, ..settings() }).await;
    let id = f.place().await;
    f.drive_all().await;
    f.make_due(&id).await; // the payment timeout passes with no answer, and no attempts are left
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "FAILED");
    assert_eq!(kinds_of(&f.to_provider().await), [kinds::PAYMENT_CHARGE, kinds::PAYMENT_REFUND], "refund to be sure");

    f.pay(&id, 1, PaymentOutcome::Succeeded).await;
    assert_eq!(
        kinds_of(&f.to_provider().await),
        [kinds::PAYMENT_CHARGE, kinds::PAYMENT_REFUND, kinds::PAYMENT_REFUND],
        "the late success is given back too (refunds are idempotent at the provider)"
    );
    assert_eq!(f.status(&id).await, "FAILED", "a late success never revives the order");
    f.done().await;
}

#[tokio::test]
async fn a_hold_that_expired_before_commit_fails_the_order_and_refunds_the_payment() {
    let f = fixture(settings()).await;
    f.stock.commit.lock().unwrap().push_back(Ok(Held::Released));
    let id = f.place().await;
    f.drive_all().await;
    f.pay(&id, 1, PaymentOutcome::Succeeded).await;
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "FAILED");
    assert_eq!(kinds_of(&f.to_provider().await), [kinds::PAYMENT_CHARGE, kinds::PAYMENT_REFUND]);
    f.done().await;
}

#[tokio::test]
async fn a_commit_answered_with_the_stock_still_held_is_asked_again_not_confirmed() {
    let f = fixture(settings()).await;
    f.stock.commit.lock().unwrap().push_back(Ok(Held::Held));
    let id = f.place().await;
    f.drive_all().await;
    f.pay(&id, 1, PaymentOutcome::Succeeded).await;
    assert_ne!(f.status(&id).await, "CONFIRMED", "not confirmed on a hold inventory did not commit");
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "CONFIRMED");
    assert_eq!(f.stock.calls("commit"), 2);
    assert_eq!(kinds_of(&f.to_provider().await), [kinds::PAYMENT_CHARGE], "no refund");
    f.done().await;
}

#[tokio::test]
async fn a_refund_is_asked_for_again_until_the_provider_acknowledges_it() {
    let f = fixture(settings()).await;
    f.stock.commit.lock().unwrap().push_back(Ok(Held::Released));
    let id = f.place().await;
    f.drive_all().await;
    f.pay(&id, 1, PaymentOutcome::Succeeded).await;
    f.drive_all().await;
    assert_eq!(kinds_of(&f.to_provider().await), [kinds::PAYMENT_CHARGE, kinds::PAYMENT_REFUND]);
    let owed = |pool: PgPool| async move {
        sqlx::query_as::<_, (String, i32)>("SELECT payment_id, asked FROM refunds_owed").fetch_all(&pool).await.unwrap()
    };
    assert_eq!(owed(f.pool.clone()).await, [(id.clone(), 1)], "owed with the final state that asked for it");

    let topology = &f.saga.topology;
    assert_eq!(refunds::ask_again(&f.pool, topology).await.unwrap(), 0, "not before its acknowledgement is overdue");
    // No acknowledgement came in time (the request, or the answer, was lost).
    sqlx::query("UPDATE refunds_owed SET due_at = now()").execute(&f.pool).await.unwrap();
    assert_eq!(refunds::ask_again(&f.pool, topology).await.unwrap(), 1);
    let sent = f.to_provider().await;
    assert_eq!(kinds_of(&sent), [kinds::PAYMENT_CHARGE, kinds::PAYMENT_REFUND, kinds::PAYMENT_REFUND]);
    assert_ne!(sent[1].message_id, sent[2].message_id, "a new message, not a replay a consumer could skip");
    assert_eq!(owed(f.pool.clone()).await, [(id.clone(), 2)]);
    assert_eq!(refunds::ask_again(&f.pool, topology).await.unwrap(), 0, "each ask waits for its own due time");

    let done = RefundDone { payment_id: id.clone(), order_id: OrderId::parse(id.clone()).unwrap(), refunded: true };
    refunds::acknowledged(&f.pool, &done).await.unwrap();
    assert!(owed(f.pool.clone()).await.is_empty(), "acknowledged: owed no more");
    f.done().await;
}

#[tokio::test]
async fn a_decline_releases_the_hold_and_charges_nothing_back() {
    let f = fixture(settings()).await;
    let id = f.place().await;
    f.drive_all().await;
    f.pay(&id, 1, PaymentOutcome::Declined { reason: "insufficient funds".into() }).await;
    f.pay(&id, 1, PaymentOutcome::Declined { reason: "insufficient funds".into() }).await; // a duplicate
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "PAYMENT_DECLINED");
    assert_eq!(kinds_of(&f.to_provider().await), [kinds::PAYMENT_CHARGE]);
    assert_eq!(f.stock.calls("roll_back"), 1);
    f.done().await;
}

#[tokio::test]
async fn a_dead_drivers_order_is_taken_over_once_its_lease_runs_out_and_a_live_driver_keeps_its_own() {
    let f = fixture(settings()).await;
    let lease = f.saga.settings.lease;
    let id = f.place().await;

    // A driver claims the order and dies (its lease is never renewed).
    let claimed = orders::claim_due(&f.pool, 10, lease).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(orders::claim_due(&f.pool, 10, lease).await.unwrap().is_empty(), "nobody else takes a leased order");
    let started = tokio::time::Instant::now();
    let taken = loop {
        let due = orders::claim_due(&f.pool, 10, lease).await.unwrap();
        if !due.is_empty() {
            break due;
        }
        assert!(started.elapsed() < lease * 3, "not taken over within three leases");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(taken[0].order_id.as_str(), id);

    // A live driver renews its lease: however long its step takes, nobody else takes the order.
    let held = vec![(taken[0].order_id.to_string(), taken[0].version)];
    let until = tokio::time::Instant::now() + lease * 3;
    while tokio::time::Instant::now() < until {
        assert_eq!(orders::renew_leases(&f.pool, &held, lease).await.unwrap(), 1);
        assert!(orders::claim_due(&f.pool, 10, lease).await.unwrap().is_empty(), "a renewed lease was taken over");
        tokio::time::sleep(lease / 3).await;
    }
    f.done().await;
}

#[tokio::test]
async fn a_step_that_hangs_is_stopped_at_its_bound_and_its_lease_left_to_run_out() {
    let step_timeout = Duration::from_millis(400);
    let f = fixture(SagaSettings { step_timeout, ..settings() }).await;
    let lease = f.saga.settings.lease;
    let id = f.place().await;
    let claimed = orders::claim_due(&f.pool, 10, lease).await.unwrap();
    assert_eq!(claimed.len(), 1);

    // Inventory takes the reservation and never answers: the step is stopped at its bound, not awaited for ever.
    f.stock.hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let advanced = tokio::time::timeout(Duration::from_secs(10), f.saga.advance(claimed[0].clone()))
        .await
        .expect("the step is bounded");
    assert!(matches!(advanced, Err(checkout_manager::error::CheckoutError::StepTimedOut { .. })), "{advanced:?}");
    assert!(started.elapsed() < step_timeout * 3, "stopped after {:?}", started.elapsed());
    assert!(f.saga.leases.snapshot(step_timeout).is_empty(), "a stopped step holds no lease");

    // A step still in hand past its bound (stuck where it cannot be stopped) is no longer renewed...
    f.saga.leases.hold(&id, claimed[0].version);
    assert_eq!(f.saga.leases.snapshot(step_timeout).len(), 1, "a step within its bound is renewed");
    tokio::time::sleep(step_timeout).await;
    assert!(f.saga.leases.snapshot(step_timeout).is_empty(), "a step past its bound is not renewed");

    // ...so its lease runs out and a driver takes the order up again; with inventory back, it goes on.
    f.stock.hang.store(false, std::sync::atomic::Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + lease * 3;
    let taken = loop {
        let due = orders::claim_due(&f.pool, 10, lease).await.unwrap();
        if !due.is_empty() {
            break due;
        }
        assert!(tokio::time::Instant::now() < deadline, "the order was never taken up again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(taken[0].order_id.as_str(), id);
    f.saga.advance(taken[0].clone()).await.unwrap();
    assert_eq!(f.status(&id).await, "PAYMENT_PENDING");
    f.done().await;
}

#[tokio::test]
async fn a_new_order_is_stored_once_as_its_reservation_and_charge_request_leave_it() {
    let f = fixture(settings()).await;
    let order = Fixture::new_order();
    let id = order.order_id.to_string();
    assert!(f.saga.take_in(&order).await.unwrap(), "a new order is taken in");
    assert_eq!(f.status(&id).await, "PAYMENT_PENDING");
    assert_eq!(f.stock.calls("reserve"), 1);
    let timeline: Vec<(String, String)> = f.timeline(&id).await;
    let steps: Vec<(&str, &str)> = timeline.iter().map(|(s, o)| (s.as_str(), o.as_str())).collect();
    assert_eq!(steps, [("created", "ok"), ("reserve", "ok"), ("payment", "requested")]);
    assert_eq!(f.events(&id).await, ["order.created", "order.reserved", "order.payment_pending"]);
    assert_eq!(kinds_of(&f.to_provider().await), [kinds::PAYMENT_CHARGE]);
    let version: i64 = sqlx::query_scalar("SELECT version FROM orders WHERE order_id = $1")
        .bind(&id)
        .fetch_one(&f.pool)
        .await
        .unwrap();
    assert_eq!(version, 0, "one write");

    // Redelivered: inventory is asked again (it answers with the hold it has), and nothing else changes.
    assert!(!f.saga.take_in(&order).await.unwrap(), "an order taken in already");
    assert_eq!(f.timeline(&id).await.len(), 3);
    assert_eq!(f.to_provider().await.len(), 1, "no second charge request");

    f.pay(&id, 1, PaymentOutcome::Succeeded).await;
    assert_eq!(f.status(&id).await, "CONFIRMED");
    assert_eq!(f.stock.calls("commit"), 1);
    f.done().await;
}

#[tokio::test]
async fn a_new_order_short_of_stock_is_stored_rejected_and_one_inventory_cannot_reach_is_left_to_the_driver() {
    let f = fixture(settings()).await;
    f.stock.reserve.lock().unwrap().push_back(Err(InventoryFailure::Refused("insufficient stock for mug".into())));
    let rejected = Fixture::new_order();
    assert!(f.saga.take_in(&rejected).await.unwrap());
    let id = rejected.order_id.to_string();
    assert_eq!(f.status(&id).await, "REJECTED");
    assert_eq!(f.events(&id).await, ["order.created", "order.rejected"]);
    assert!(f.to_provider().await.is_empty(), "no money asked for");

    // Inventory unreachable: stored PENDING with the retry scheduled, and the driver carries on from there.
    f.stock.reserve.lock().unwrap().push_back(Err(InventoryFailure::Transient("inventory unavailable".into())));
    let waiting = Fixture::new_order();
    assert!(f.saga.take_in(&waiting).await.unwrap());
    let id = waiting.order_id.to_string();
    assert_eq!(f.status(&id).await, "PENDING");
    f.drive_all().await;
    assert_eq!(f.status(&id).await, "PAYMENT_PENDING");
    assert_eq!(f.stock.calls("reserve"), 3);
    f.done().await;
}

#[tokio::test]
async fn an_order_left_waiting_for_its_payment_is_kept_exactly_as_a_read_gives_it() {
    let f = fixture(settings()).await;
    let id = f.take_in().await;
    let kept = f.saga.awaiting.peek(&id).expect("kept while it waits for its payment");
    let read = orders::load(&f.pool, &id).await.unwrap().expect("stored");
    // Field for field, the timeline and the microsecond times included: a final event built from the copy
    // equals what a later read shows.
    assert_eq!(kept, read);

    f.pay(&id, 1, PaymentOutcome::Succeeded).await;
    assert_eq!(f.status(&id).await, "CONFIRMED");
    assert_eq!(f.stock.calls("commit"), 1);
    assert!(f.saga.awaiting.peek(&id).is_none(), "a result takes the copy; a final order is not kept");
    f.done().await;
}

#[tokio::test]
async fn a_kept_copy_another_instance_moved_past_is_read_again_and_the_late_success_refunded() {
    let f = fixture(SagaSettings { max_payment_attempts: 1, ..settings() }).await;
    let id = f.take_in().await;
    assert!(f.saga.awaiting.peek(&id).is_some());

    // Another instance's driver finds the payment overdue, gives up and rolls the order back; this
    // instance's copy still says it waits for its payment.
    let other = Saga { awaiting: Arc::default(), ..f.saga.clone() };
    f.make_due(&id).await;
    drive_with(&other, &f.pool).await;
    assert_eq!(f.status(&id).await, "FAILED");
    assert!(f.saga.awaiting.peek(&id).is_some(), "the copy went stale");

    // The success reaches this instance: its write is refused by the version, it reads the order again,
    // and gives the money back instead of confirming.
    f.pay(&id, 1, PaymentOutcome::Succeeded).await;
    assert_eq!(f.status(&id).await, "FAILED", "a stale copy never revives the order");
    assert_eq!(
        kinds_of(&f.to_provider().await),
        [kinds::PAYMENT_CHARGE, kinds::PAYMENT_REFUND, kinds::PAYMENT_REFUND],
        "the give-up's refund to be sure, and the late success's"
    );
    let version: i64 = sqlx::query_scalar("SELECT version FROM orders WHERE order_id = $1")
        .bind(&id)
        .fetch_one(&f.pool)
        .await
        .unwrap();
    assert_eq!(orders::load(&f.pool, &id).await.unwrap().unwrap().version, version);
    f.done().await;
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

#[tokio::test]
async fn a_copy_older_than_half_the_payment_timeout_is_not_used() {
    let payment_timeout = Duration::from_millis(300);
    let f = fixture(SagaSettings { max_payment_attempts: 1, payment_timeout, ..settings() }).await;
    let id = f.take_in().await;

    // The timeout passes with no answer; another instance's driver gives the order up.
    tokio::time::sleep(payment_timeout + Duration::from_millis(50)).await;
    let other = Saga { awaiting: Arc::default(), ..f.saga.clone() };
    drive_with(&other, &f.pool).await;
    assert_eq!(f.status(&id).await, "FAILED");
    assert!(f.saga.awaiting.peek(&id).is_some(), "this instance still holds its old copy");

    // The late success is decided from a read: inventory is never asked to commit the released hold.
    f.pay(&id, 1, PaymentOutcome::Succeeded).await;
    assert_eq!(f.stock.calls("commit"), 0, "an old copy reached inventory");
    assert_eq!(f.status(&id).await, "FAILED");
    assert_eq!(kinds_of(&f.to_provider().await), [kinds::PAYMENT_CHARGE, kinds::PAYMENT_REFUND, kinds::PAYMENT_REFUND]);
    f.done().await;
}

#[tokio::test]
async fn a_failure_of_an_attempt_a_stale_copy_does_not_know_is_decided_from_a_read() {
    let f = fixture(settings()).await;
    let id = f.take_in().await;

    // Another instance takes attempt 1's failure and asks again (attempt 2); this instance's copy still
    // waits for attempt 1.
    let other = Saga { awaiting: Arc::default(), ..f.saga.clone() };
    let failed = |attempt| PaymentResult {
        payment_id: id.clone(),
        order_id: OrderId::parse(id.as_str()).unwrap(),
        attempt,
        outcome: PaymentOutcome::TechnicalFailure { reason: "provider hiccup".into() },
    };
    other.on_payment_result(&failed(1)).await.unwrap();
    drive_with(&other, &f.pool).await;
    assert_eq!(f.to_provider().await.len(), 2, "attempt 2 asked for");

    // Attempt 2's failure reaches this instance: it is a retry, not a stale answer to drop.
    f.saga.on_payment_result(&failed(2)).await.unwrap();
    drive_with(&other, &f.pool).await;
    assert_eq!(kinds_of(&f.to_provider().await), [kinds::PAYMENT_CHARGE; 3], "attempt 3 asked for at once");
    f.done().await;
}
