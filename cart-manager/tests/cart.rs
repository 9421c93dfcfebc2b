//! The cart's domain on its own: adds, removals, views and checkouts against a real database of its own and a
//! catalogue the test controls (no inventory-manager, no broker): idempotency, stock bounds, deadlines and the
//! checkout's one-statement hand-over, each checked at its fastest.

use std::{collections::HashMap, sync::Mutex};

use cart_manager::{
    cart::{self, Request},
    error::CartError,
    inventory::{Catalogue, ProductInfo},
    startup::MIGRATOR,
};
use chrono::Utc;
use ordermesh_bus::Topology;
use ordermesh_config::DatabaseSettings;
use ordermesh_messages::{ClientId, IdempotencyKey, ProductId, Quantity, payloads};
use ordermesh_testkit::testdb;
use sqlx::PgPool;
use uuid::Uuid;

/// A catalogue whose prices and availability the test sets.
#[derive(Default)]
struct FakeCatalogue {
    products: Mutex<HashMap<ProductId, ProductInfo>>,
}

impl FakeCatalogue {
    fn with(products: &[(&str, i64, i64)]) -> Self {
        let catalogue = Self::default();
        for &(id, price_cents, available) in products {
            catalogue.set(id, price_cents, available);
        }
        catalogue
    }

    fn set(&self, id: &str, price_cents: i64, available: i64) {
        self.products.lock().unwrap().insert(product(id), ProductInfo { price_cents, available });
    }
}

impl Catalogue for FakeCatalogue {
    async fn product(&self, id: &ProductId) -> Result<ProductInfo, CartError> {
        self.products.lock().unwrap().get(id).cloned().ok_or_else(|| CartError::UnknownProduct(id.clone()))
    }

    async fn products(&self, ids: &[ProductId]) -> Result<HashMap<ProductId, ProductInfo>, CartError> {
        let known = self.products.lock().unwrap();
        Ok(ids.iter().filter_map(|id| known.get(id).map(|p| (id.clone(), p.clone()))).collect())
    }
}

fn product(id: &str) -> ProductId {
    ProductId::parse(id).unwrap()
}

fn client(id: &str) -> ClientId {
    ClientId::parse(id).unwrap()
}

fn units(n: i64) -> Quantity {
    Quantity::parse(n).unwrap()
}

/// A request under a client's `Idempotency-Key` (or, without one, a job's message id), with no deadline.
fn request(key: Option<&IdempotencyKey>) -> Request<'_> {
    Request { message_id: Uuid::now_v7(), idempotency_key: key, deadline: None }
}

struct Fixture {
    pool: PgPool,
    database: String,
    topology: Topology,
}

impl Fixture {
    async fn new() -> Self {
        let (url, database) = testdb::unique_database("om_test_cart_");
        let pool = ordermesh_db::connect_and_migrate(&DatabaseSettings::new(url), &MIGRATOR).await.expect("cart db");
        let topology = Topology::ephemeral(
            format!("test-cart-{}", &Uuid::new_v4().simple().to_string()[..12]),
            std::time::Duration::from_secs(60),
        );
        Self { pool, database, topology }
    }

    async fn add(&self, catalogue: &FakeCatalogue, who: &str, what: &str, n: i64) -> Result<i64, CartError> {
        cart::add_item(&self.pool, catalogue, &request(None), &client(who), &product(what), units(n))
            .await
            .map(|added| added.quantity_in_cart)
    }

    async fn checkout(&self, catalogue: &FakeCatalogue, who: &str, key: &str) -> Result<cart::Checkout, CartError> {
        let job = payloads::Checkout {
            client_id: client(who),
            idempotency_key: key.into(),
            channel: ordermesh_messages::Channel::parse("web").unwrap(),
        };
        cart::checkout(&self.pool, catalogue, &self.topology, &job, None).await
    }

    async fn done(self) {
        self.pool.close().await;
        testdb::drop_database(&self.database).await;
    }
}

#[tokio::test]
async fn adds_sum_up_to_what_is_available_and_no_further() {
    let f = Fixture::new().await;
    let catalogue = FakeCatalogue::with(&[("mug", 1250, 5)]);
    assert_eq!(f.add(&catalogue, "ada", "mug", 2).await.unwrap(), 2);
    assert_eq!(f.add(&catalogue, "ada", "mug", 3).await.unwrap(), 5, "the cart holds all that is available");
    match f.add(&catalogue, "ada", "mug", 1).await {
        Err(CartError::NotEnoughStock { in_cart: 5, adding: 1, available: 5, .. }) => {}
        other => panic!("expected not enough stock, got {other:?}"),
    }
    assert!(matches!(f.add(&catalogue, "ada", "teapot", 1).await, Err(CartError::UnknownProduct(_))));
    let view = cart::view(&f.pool, &catalogue, &client("ada")).await.unwrap();
    assert_eq!((view.items.len(), view.total_cents), (1, 5 * 1250), "refused adds changed nothing");
    f.done().await;
}

#[tokio::test]
async fn a_repeated_key_answers_as_the_first_time_and_adds_nothing_more() {
    let f = Fixture::new().await;
    let catalogue = FakeCatalogue::with(&[("mug", 1250, 100)]);
    let key = IdempotencyKey::parse("add-1").unwrap();
    let add = |n| {
        let (f, catalogue, key) = (&f, &catalogue, &key);
        async move {
            cart::add_item(&f.pool, catalogue, &request(Some(key)), &client("ada"), &product("mug"), units(n)).await
        }
    };
    assert_eq!(add(2).await.unwrap().quantity_in_cart, 2);
    assert_eq!(add(2).await.unwrap().quantity_in_cart, 2, "a retry is answered, not applied");
    // Even when the catalogue is away now, a replay answers from what was stored.
    catalogue.products.lock().unwrap().clear();
    assert_eq!(add(2).await.unwrap().quantity_in_cart, 2);
    assert!(matches!(add(3).await, Err(CartError::KeyReused)), "the same key for another body is refused");
    f.done().await;
}

#[tokio::test]
async fn a_removal_takes_the_product_out_once_and_its_retry_is_answered_the_same() {
    let f = Fixture::new().await;
    let catalogue = FakeCatalogue::with(&[("mug", 1250, 10), ("tea", 400, 10)]);
    f.add(&catalogue, "ada", "mug", 2).await.unwrap();
    f.add(&catalogue, "ada", "tea", 1).await.unwrap();
    let key = IdempotencyKey::parse("remove-1").unwrap();
    let (ada, mug) = (client("ada"), product("mug"));
    let remove = async || cart::remove_item(&f.pool, &request(Some(&key)), &ada, &mug).await;
    remove().await.unwrap();
    remove().await.expect("a retried removal is answered as the first, not 'not in the cart'");
    let other = cart::remove_item(&f.pool, &request(None), &client("ada"), &product("mug")).await;
    assert!(matches!(other, Err(CartError::NotInCart(_))), "a new removal of what is gone: {other:?}");
    let view = cart::view(&f.pool, &catalogue, &client("ada")).await.unwrap();
    let left: Vec<&str> = view.items.iter().map(|i| i.product_id.as_str()).collect();
    assert_eq!((left, view.total_cents), (vec!["tea"], 400));
    f.done().await;
}

#[tokio::test]
async fn a_request_past_its_deadline_changes_nothing() {
    let f = Fixture::new().await;
    let catalogue = FakeCatalogue::with(&[("mug", 1250, 10)]);
    let late = Request { message_id: Uuid::now_v7(), idempotency_key: None, deadline: Some(Utc::now()) };
    let added = cart::add_item(&f.pool, &catalogue, &late, &client("ada"), &product("mug"), units(1)).await;
    assert!(matches!(added, Err(CartError::Expired)), "{added:?}");
    let view = cart::view(&f.pool, &catalogue, &client("ada")).await.unwrap();
    assert!(view.items.is_empty(), "nothing was added for a caller that stopped waiting");
    f.done().await;
}

#[tokio::test]
async fn a_checkout_empties_the_cart_into_one_order_at_the_prices_of_the_moment_once_per_key() {
    let f = Fixture::new().await;
    let catalogue = FakeCatalogue::with(&[("mug", 1250, 10), ("tea", 400, 10)]);
    f.add(&catalogue, "ada", "mug", 2).await.unwrap();
    f.add(&catalogue, "ada", "tea", 1).await.unwrap();
    catalogue.set("tea", 450, 10); // a price change before the checkout counts

    let first = f.checkout(&catalogue, "ada", "key:c1").await.unwrap();
    assert!(first.created);
    assert_eq!(first.outbox.len(), 1, "order.place queued in the same statement");
    let order = cart::checkout_snapshot(&f.pool, &first.order_id).await.unwrap().expect("the order is recorded");
    assert_eq!(order.total_cents, 2 * 1250 + 450);
    assert_eq!(order.channel.as_str(), "web");
    assert!(cart::view(&f.pool, &catalogue, &client("ada")).await.unwrap().items.is_empty(), "the cart is emptied");

    let again = f.checkout(&catalogue, "ada", "key:c1").await.unwrap();
    assert_eq!((again.order_id, again.created, again.outbox.len()), (first.order_id, false, 0), "one order per key");
    assert!(matches!(f.checkout(&catalogue, "ada", "key:c2").await, Err(CartError::EmptyCart)));
    f.done().await;
}

#[tokio::test]
async fn racing_copies_of_one_add_add_once_and_answer_alike() {
    let f = Fixture::new().await;
    let catalogue = FakeCatalogue::with(&[("mug", 1250, 100)]);
    let (ada, mug) = (client("ada"), product("mug"));
    for round in 0..10 {
        let key = IdempotencyKey::parse(format!("race-{round}")).unwrap();
        let add = async || cart::add_item(&f.pool, &catalogue, &request(Some(&key)), &ada, &mug, units(1)).await;
        let (a, b) = tokio::join!(add(), add());
        let (a, b) = (a.unwrap().quantity_in_cart, b.unwrap().quantity_in_cart);
        assert_eq!((a, b), (round + 1, round + 1), "round {round}: both copies answer the one add");
    }
    f.done().await;
}

#[tokio::test]
async fn a_retried_removal_that_waited_for_its_first_copy_s_commit_answers_as_the_first() {
    let f = Fixture::new().await;
    let catalogue = FakeCatalogue::with(&[("mug", 1250, 10)]);
    f.add(&catalogue, "ada", "mug", 1).await.unwrap();
    // The first copy of the removal: applied and recorded, its commit held up (as a lost synchronous standby
    // holds every commit), so its caller was told 504 and retries under the same key.
    let mut first = f.pool.begin().await.unwrap();
    sqlx::query("DELETE FROM cart_items WHERE client_id = 'ada' AND product_id = 'mug'")
        .execute(&mut *first)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO cart_requests (client_id, request_key, fingerprint, response)
         VALUES ('ada', 'key:remove-1', '{\"op\":\"remove_item\",\"productID\":\"mug\"}', 'null')",
    )
    .execute(&mut *first)
    .await
    .unwrap();
    let key = IdempotencyKey::parse("remove-1").unwrap();
    let (ada, mug) = (client("ada"), product("mug"));
    let again = request(Some(&key));
    let retry = cart::remove_item(&f.pool, &again, &ada, &mug);
    let commit_later = async {
        // The retry has read no record of the key and waits for the line's row lock by now.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        first.commit().await.unwrap();
    };
    let (answer, ()) = tokio::join!(retry, commit_later);
    assert!(answer.is_ok(), "the retry answers as the first copy did, not 'not in the cart': {answer:?}");
    f.done().await;
}

#[tokio::test]
async fn a_retried_add_that_waited_for_its_first_copy_s_commit_answers_as_the_first_not_out_of_stock() {
    let f = Fixture::new().await;
    // One unit: the first copy's add takes it, so the retry, if applied again, would find no stock.
    let catalogue = FakeCatalogue::with(&[("mug", 1250, 1)]);
    let mut first = f.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO cart_items (client_id, product_id, quantity) VALUES ('ada', 'mug', 1)")
        .execute(&mut *first)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO cart_requests (client_id, request_key, fingerprint, response)
         VALUES ('ada', 'key:add-1', '{\"op\":\"add_item\",\"productID\":\"mug\",\"quantity\":1}',
                 '{\"quantity_in_cart\": 1}')",
    )
    .execute(&mut *first)
    .await
    .unwrap();
    let key = IdempotencyKey::parse("add-1").unwrap();
    let (ada, mug) = (client("ada"), product("mug"));
    let again = request(Some(&key));
    let retry = cart::add_item(&f.pool, &catalogue, &again, &ada, &mug, units(1));
    let commit_later = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        first.commit().await.unwrap();
    };
    let (answer, ()) = tokio::join!(retry, commit_later);
    assert_eq!(answer.expect("answered as the first copy").quantity_in_cart, 1);
    f.done().await;
}

#[tokio::test]
async fn a_retry_refused_for_stock_while_its_first_copy_commits_answers_as_the_first() {
    let f = Fixture::new().await;
    // The first copy took the last units (other carts' orders hold the rest now), its commit held up as a lost
    // synchronous standby holds every commit: invisible to the retry, which finds no stock and waits for no row.
    let catalogue = FakeCatalogue::with(&[("scarce", 900, 0)]);
    let mut first = f.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO cart_items (client_id, product_id, quantity) VALUES ('ada', 'scarce', 2)")
        .execute(&mut *first)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO cart_requests (client_id, request_key, fingerprint, response)
         VALUES ('ada', 'key:add-1', '{\"op\":\"add_item\",\"productID\":\"scarce\",\"quantity\":2}',
                 '{\"quantity_in_cart\": 2}')",
    )
    .execute(&mut *first)
    .await
    .unwrap();
    let key = IdempotencyKey::parse("add-1").unwrap();
    let (ada, scarce) = (client("ada"), product("scarce"));
    let again = request(Some(&key));
    let retry = cart::add_item(&f.pool, &catalogue, &again, &ada, &scarce, units(2));
    let commit_later = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        first.commit().await.unwrap();
    };
    let (answer, ()) = tokio::join!(retry, commit_later);
    assert_eq!(answer.expect("answered as the first copy, not 'not enough stock'").quantity_in_cart, 2);
    f.done().await;
}

#[tokio::test]
async fn a_refusal_is_its_key_s_answer_for_a_copy_that_comes_later() {
    let f = Fixture::new().await;
    let catalogue = FakeCatalogue::with(&[("mug", 1250, 0), ("tea", 400, 10)]);
    let (ada, mug, tea) = (client("ada"), product("mug"), product("tea"));
    // A retry overtook its first copy (delayed past the client's patience, or sent by a gateway whose clock is
    // ahead) and was refused: the first copy, arriving when it could apply, must not.
    let add_key = IdempotencyKey::parse("add-1").unwrap();
    let add = async || cart::add_item(&f.pool, &catalogue, &request(Some(&add_key)), &ada, &mug, units(1)).await;
    assert!(matches!(add().await, Err(CartError::NotEnoughStock { available: 0, .. })));
    catalogue.set("mug", 1250, 5);
    match add().await {
        Err(CartError::NotEnoughStock { in_cart: 0, adding: 1, available: 0, .. }) => {}
        other => panic!("the later copy answers the refusal as it was given: {other:?}"),
    }
    // The same for a removal: refused as not in the cart, then the product is added under another key; the
    // removal's late copy must not take it out.
    let remove_key = IdempotencyKey::parse("remove-1").unwrap();
    let remove = async || cart::remove_item(&f.pool, &request(Some(&remove_key)), &ada, &tea).await;
    assert!(matches!(remove().await, Err(CartError::NotInCart(_))));
    f.add(&catalogue, "ada", "tea", 1).await.unwrap();
    assert!(matches!(remove().await, Err(CartError::NotInCart(_))), "the late copy answers as the first");
    let view = cart::view(&f.pool, &catalogue, &ada).await.unwrap();
    let held: Vec<(&str, i64)> = view.items.iter().map(|i| (i.product_id.as_str(), i.quantity)).collect();
    assert_eq!(held, vec![("tea", 1)], "neither late copy changed the cart");
    f.done().await;
}

#[tokio::test]
async fn a_checkout_refused_as_empty_is_its_key_s_answer_for_a_copy_that_comes_later() {
    let f = Fixture::new().await;
    let catalogue = FakeCatalogue::with(&[("mug", 1250, 10)]);
    assert!(matches!(f.checkout(&catalogue, "ada", "key:checkout-1").await, Err(CartError::EmptyCart)));
    // An add fills the cart after the refusal; the checkout's late first copy must not order it.
    f.add(&catalogue, "ada", "mug", 2).await.unwrap();
    let late = f.checkout(&catalogue, "ada", "key:checkout-1").await;
    assert!(matches!(late, Err(CartError::EmptyCart)), "the late copy answers the refusal: {late:?}");
    let view = cart::view(&f.pool, &catalogue, &client("ada")).await.unwrap();
    assert_eq!(view.items.len(), 1, "and leaves the cart as it is");
    let checkout = f.checkout(&catalogue, "ada", "key:checkout-2").await.expect("a new key checks out");
    assert!(checkout.created);
    // Checkouts and adds keep their keys apart, as they always have: an empty cart under an add's key is 409.
    let shared = IdempotencyKey::parse("shared").unwrap();
    let (bo, mug) = (client("bo"), product("mug"));
    cart::add_item(&f.pool, &catalogue, &request(Some(&shared)), &bo, &mug, units(1)).await.unwrap();
    cart::remove_item(&f.pool, &request(None), &bo, &mug).await.unwrap();
    let empty = f.checkout(&catalogue, "bo", "key:shared").await;
    assert!(matches!(empty, Err(CartError::EmptyCart)), "not 'key reused': {empty:?}");
    f.done().await;
}
