//! Inventory's token gate (`INVENTORY_AUTH=required`): every `inventory.v1` RPC needs a live token, the
//! catalogue's writes an operator's; health and reflection stay open; a revoked token is refused within a
//! second.

use std::time::{Duration, Instant};

use inventory_manager::tokens::{self, Role};
use ordermesh_config::AuthMode;
use ordermesh_credentials::Secret;
use ordermesh_proto::inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::{TestInventory, expect_code, reserve_request, spawn_inventory_with};

async fn spawn_gated() -> TestInventory {
    spawn_inventory_with(|config| config.auth = AuthMode::Required).await
}

/// A client whose every call presents `token` (the one the services use: `lazy_client`).
fn client_with(inv: &TestInventory, token: Option<&str>) -> InventoryServiceClient<ordermesh_proto::Balanced> {
    pb::lazy_client(&format!("http://{}", inv.addr), Duration::from_secs(5), token, &Default::default()).unwrap()
}

fn upsert(id: &str) -> pb::UpsertProductRequest {
    pb::UpsertProductRequest { product_id: id.into(), name: format!("Product {id}"), price_cents: 100, on_hand: 10 }
}

#[tokio::test]
async fn without_a_token_every_inventory_call_is_unauthenticated_but_health_answers() {
    let inv = spawn_gated().await;
    let mut anonymous = client_with(&inv, None);
    let status = expect_code(anonymous.upsert_product(upsert("p")).await, Code::Unauthenticated);
    assert!(status.message().contains("authorization: Bearer"), "{status:?}");
    expect_code(anonymous.reserve(reserve_request("r1", &[("p", 1)], 0)).await, Code::Unauthenticated);
    expect_code(anonymous.get_product(pb::GetProductRequest { product_id: "p".into() }).await, Code::Unauthenticated);
    let mut made_up = client_with(&inv, Some("inv_00000000_not-a-real-token"));
    expect_code(made_up.list_products(pb::ListProductsRequest::default()).await, Code::Unauthenticated);
    // The wrong scheme is no token either.
    let channel = Channel::from_shared(format!("http://{}", inv.addr)).unwrap().connect().await.unwrap();
    let mut request = tonic::Request::new(upsert("p"));
    request.metadata_mut().insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
    expect_code(InventoryServiceClient::new(channel.clone()).upsert_product(request).await, Code::Unauthenticated);

    let health = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
    assert!(health.is_ok(), "health needs no token: {health:?}");
    inv.stop().await;
}

#[tokio::test]
async fn a_service_token_reserves_but_may_not_change_the_catalogue_and_an_operator_token_may() {
    let inv = spawn_gated().await;
    let (_, operator) = tokens::create(&inv.pool, Role::Operator, "test operator").await.unwrap();
    let (_, service) = tokens::create(&inv.pool, Role::Service, "test service").await.unwrap();
    let mut operator = client_with(&inv, Some(operator.expose()));
    let mut service = client_with(&inv, Some(service.expose()));

    let status = expect_code(service.upsert_product(upsert("p")).await, Code::PermissionDenied);
    assert!(status.message().contains("operator"), "{status:?}");
    let created = operator.upsert_product(upsert("p")).await.expect("an operator sets the catalogue").into_inner();
    assert_eq!(created.on_hand, 10);

    let held = service.reserve(reserve_request("r1", &[("p", 3)], 0)).await.expect("a service reserves");
    assert_eq!(held.into_inner().lines.len(), 1);
    service
        .commit_reservation(pb::CommitReservationRequest { reservation_id: "r1".into() })
        .await
        .expect("a service commits");
    let stock = service
        .get_available_quantity(pb::GetAvailableQuantityRequest { product_id: "p".into() })
        .await
        .expect("a service reads")
        .into_inner();
    assert_eq!((stock.on_hand, stock.available), (7, 7));
    // An operator may do what a service may.
    operator.reserve(reserve_request("r2", &[("p", 1)], 0)).await.expect("an operator reserves");
    inv.stop().await;
}

#[tokio::test]
async fn a_revoked_token_is_refused_within_a_second() {
    let inv = spawn_gated().await;
    let (record, token) = tokens::create(&inv.pool, Role::Operator, "soon revoked").await.unwrap();
    let mut client = client_with(&inv, Some(token.expose()));
    client.upsert_product(upsert("p")).await.expect("a live token works");

    assert!(tokens::revoke(&inv.pool, &record.token_id).await.unwrap());
    let revoked_at = Instant::now();
    loop {
        match client.upsert_product(upsert("p")).await {
            Err(status) if status.code() == Code::Unauthenticated => break,
            Ok(_) => {}
            Err(other) => panic!("a revoked token got {other:?}"),
        }
        assert!(revoked_at.elapsed() < Duration::from_secs(1), "a revoked token still worked after a second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!tokens::revoke(&inv.pool, &record.token_id).await.unwrap(), "revoked once only");
    inv.stop().await;
}

#[tokio::test]
async fn a_token_registered_from_a_file_works_and_registering_it_again_changes_nothing() {
    let inv = spawn_gated().await;
    let token = Secret::new("0123456789abcdef0123456789abcdef-deployment");
    let (first, new) = tokens::register(&inv.pool, &token, Role::Service, "cart").await.unwrap();
    assert!(new);
    let (again, new) = tokens::register(&inv.pool, &token, Role::Service, "cart").await.unwrap();
    assert!(!new, "the same token registered twice is one token");
    assert_eq!(first.token_id, again.token_id);
    let err = tokens::register(&inv.pool, &token, Role::Operator, "").await.unwrap_err().to_string();
    assert!(err.contains("already registered") && err.contains("service"), "{err}");
    let short = tokens::register(&inv.pool, &Secret::new("short"), Role::Service, "").await.unwrap_err();
    assert!(short.to_string().contains("at least 32"), "{short}");

    let mut client = client_with(&inv, Some(token.expose()));
    client.list_products(pb::ListProductsRequest::default()).await.expect("a registered token works");
    let listed = tokens::list(&inv.pool).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!format!("{listed:?}").contains(token.expose()), "a listing never shows a token");
    inv.stop().await;
}
