//! The provider's books on a real database: a charge is taken once per payment id, however many copies
//! race, and only if the money is there (a new client starts with the default balance).

use ordermesh_config::DatabaseSettings;
use ordermesh_messages::{
    ClientId, OrderId,
    payloads::{ChargeRequest, PaymentOutcome},
};
use payment_gateway::books;
use sqlx::PgPool;

const DEFAULT_BALANCE: i64 = 10_000;

async fn books_db() -> (PgPool, String) {
    ordermesh_testkit::testdb::drop_stale_databases("om_payment_").await;
    let (url, name) = ordermesh_testkit::testdb::unique_database("om_payment_");
    let pool =
        ordermesh_db::connect_and_migrate(&DatabaseSettings::new(url.as_str()), &payment_gateway::startup::MIGRATOR)
            .await
            .expect("payment database");
    (pool, name)
}

fn charge(payment_id: &str, client: &str, amount_cents: i64) -> ChargeRequest {
    ChargeRequest {
        payment_id: payment_id.into(),
        order_id: OrderId::generate(),
        client_id: ClientId::parse(client.to_owned()).unwrap(),
        amount_cents,
        attempt: 1,
    }
}

async fn balance(pool: &PgPool, client: &str) -> Option<i64> {
    books::balance(pool, &ClientId::parse(client.to_owned()).unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_copies_of_one_charge_take_the_money_once() {
    let (pool, name) = books_db().await;
    let copies = (0..24).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move { books::charge(&pool, &charge("pay-1", "alice", 2_500), DEFAULT_BALANCE).await })
    });
    for outcome in futures::future::join_all(copies).await {
        assert_eq!(outcome.unwrap().unwrap(), PaymentOutcome::Succeeded);
    }
    assert_eq!(balance(&pool, "alice").await, Some(DEFAULT_BALANCE - 2_500), "charged once");
    let booked: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_charges").fetch_one(&pool).await.unwrap();
    assert_eq!(booked, 1);
    pool.close().await;
    ordermesh_testkit::testdb::drop_database(&name).await;
}

#[tokio::test]
async fn a_charge_beyond_the_balance_is_declined_and_its_answer_kept() {
    let (pool, name) = books_db().await;
    // A new client whose first charge exceeds the default: declined, and the account opened untouched.
    let first = books::charge(&pool, &charge("big", "bob", DEFAULT_BALANCE + 1), DEFAULT_BALANCE).await.unwrap();
    assert!(matches!(first, PaymentOutcome::Declined { .. }), "{first:?}");
    assert_eq!(balance(&pool, "bob").await, Some(DEFAULT_BALANCE));
    // Money that is there is taken; then the rest does not cover the next charge.
    assert_eq!(
        books::charge(&pool, &charge("a", "bob", 6_000), DEFAULT_BALANCE).await.unwrap(),
        PaymentOutcome::Succeeded
    );
    let short = books::charge(&pool, &charge("b", "bob", 6_000), DEFAULT_BALANCE).await.unwrap();
    assert!(matches!(short, PaymentOutcome::Declined { .. }), "{short:?}");
    assert_eq!(balance(&pool, "bob").await, Some(4_000));
    // Asked again, each keeps its first answer, even once the money would be there.
    books::set_balance(&pool, &ClientId::parse("bob".to_owned()).unwrap(), 100_000).await.unwrap();
    assert_eq!(books::charge(&pool, &charge("b", "bob", 6_000), DEFAULT_BALANCE).await.unwrap(), short);
    assert_eq!(
        books::charge(&pool, &charge("a", "bob", 6_000), DEFAULT_BALANCE).await.unwrap(),
        PaymentOutcome::Succeeded
    );
    assert_eq!(balance(&pool, "bob").await, Some(100_000), "no charge taken twice");
    pool.close().await;
    ordermesh_testkit::testdb::drop_database(&name).await;
}
