//! UpsertProduct, GetProduct, ListProducts and GetAvailableQuantity.

use ordermesh_proto::inventory::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{expect_code, spawn_inventory};

fn upsert(id: &str, name: &str, price_cents: i64, on_hand: i64) -> pb::UpsertProductRequest {
    pb::UpsertProductRequest { product_id: id.into(), name: name.into(), price_cents, on_hand }
}

#[tokio::test]
async fn upsert_creates_then_updates_a_product() {
    let mut inv = spawn_inventory().await;
    let created = inv.client.upsert_product(upsert("sku-1", "Mug", 1250, 10)).await.unwrap().into_inner();
    assert_eq!(
        created,
        pb::Product {
            product_id: "sku-1".into(),
            name: "Mug".into(),
            price_cents: 1250,
            on_hand: 10,
            reserved: 0,
            available: 10
        }
    );

    let updated = inv.client.upsert_product(upsert("sku-1", "Big mug", 1500, 7)).await.unwrap().into_inner();
    assert_eq!((updated.name.as_str(), updated.price_cents, updated.on_hand), ("Big mug", 1500, 7));

    let read = inv.client.get_product(pb::GetProductRequest { product_id: "sku-1".into() }).await.unwrap().into_inner();
    assert_eq!(read, updated);
    let stock = inv.stock("sku-1").await;
    assert_eq!((stock.product_id.as_str(), stock.on_hand, stock.reserved, stock.available), ("sku-1", 7, 0, 7));
    inv.stop().await;
}

#[tokio::test]
async fn on_hand_cannot_drop_below_what_is_reserved() {
    let mut inv = spawn_inventory().await;
    inv.product("p", 10).await;
    inv.reserve("r1", &[("p", 6)]).await.unwrap();

    let status =
        expect_code(inv.client.upsert_product(upsert("p", "Product p", 100, 5)).await, Code::FailedPrecondition);
    assert!(status.message().contains("6"), "message names what is reserved: {}", status.message());
    // Refused entirely: neither the count nor the catalogue data changed.
    let p = inv.client.get_product(pb::GetProductRequest { product_id: "p".into() }).await.unwrap().into_inner();
    assert_eq!((p.on_hand, p.reserved, p.available), (10, 6, 4));

    let ok = inv.client.upsert_product(upsert("p", "Product p", 100, 6)).await.unwrap().into_inner();
    assert_eq!((ok.on_hand, ok.reserved, ok.available), (6, 6, 0));
    inv.stop().await;
}

#[tokio::test]
async fn bad_product_fields_are_invalid_argument_naming_the_field() {
    let mut inv = spawn_inventory().await;
    let cases = [
        (upsert("", "x", 1, 1), "product_id"),
        (upsert("  ", "x", 1, 1), "product_id"),
        (upsert(&"x".repeat(101), "x", 1, 1), "product_id"),
        (upsert("ok", "", 1, 1), "name"),
        (upsert("ok", "   ", 1, 1), "name"),
        (upsert("ok", &"n".repeat(201), 1, 1), "name"),
        (upsert("ok", "x", -1, 1), "price_cents"),
        (upsert("ok", "x", 1, -1), "on_hand"),
        (upsert("ok", "x", 1, i64::MAX), "on_hand"),
    ];
    for (request, field) in cases {
        let status = expect_code(inv.client.upsert_product(request).await, Code::InvalidArgument);
        let violations = status.get_details_bad_request().expect("bad request details").field_violations;
        assert_eq!(violations[0].field, field, "{status:?}");
    }
    // An id of exactly 100 characters is fine.
    inv.product(&"x".repeat(100), 1).await;
    inv.stop().await;
}

#[tokio::test]
async fn unknown_products_are_not_found() {
    let mut inv = spawn_inventory().await;
    let status =
        expect_code(inv.client.get_product(pb::GetProductRequest { product_id: "nope".into() }).await, Code::NotFound);
    assert!(status.message().contains("nope"));
    expect_code(
        inv.client.get_available_quantity(pb::GetAvailableQuantityRequest { product_id: "nope".into() }).await,
        Code::NotFound,
    );
    expect_code(
        inv.client.get_product(pb::GetProductRequest { product_id: String::new() }).await,
        Code::InvalidArgument,
    );
    inv.stop().await;
}

#[tokio::test]
async fn list_products_pages_through_the_catalogue_in_id_order() {
    let mut inv = spawn_inventory().await;
    for id in ["e", "c", "a", "d", "b"] {
        inv.product(id, 1).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = inv
            .client
            .list_products(pb::ListProductsRequest { page_size: 2, page_token: token.clone() })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.products.len() <= 2);
        seen.extend(page.products.into_iter().map(|p| p.product_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);

    let all = inv.client.list_products(pb::ListProductsRequest::default()).await.unwrap().into_inner();
    assert_eq!(all.products.len(), 5);
    assert!(all.next_page_token.is_empty());

    expect_code(
        inv.client.list_products(pb::ListProductsRequest { page_size: -1, page_token: String::new() }).await,
        Code::InvalidArgument,
    );
    expect_code(
        inv.client.list_products(pb::ListProductsRequest { page_size: 1, page_token: "x".repeat(500) }).await,
        Code::InvalidArgument,
    );
    inv.stop().await;
}

#[tokio::test]
async fn get_products_reads_a_whole_cart_in_one_call_and_leaves_out_unknown_ids() {
    let mut inv = spawn_inventory().await;
    for (id, on_hand) in [("b", 2), ("a", 1), ("c", 3)] {
        inv.product(id, on_hand).await;
    }
    inv.reserve("r", &[("c", 1)]).await.unwrap();
    let ids = |ids: &[&str]| pb::GetProductsRequest { product_ids: ids.iter().map(|s| (*s).to_owned()).collect() };
    let found = inv.client.get_products(ids(&["c", "nope", "a", "c"])).await.unwrap().into_inner().products;
    let seen: Vec<(&str, i64, i64)> = found.iter().map(|p| (p.product_id.as_str(), p.on_hand, p.available)).collect();
    assert_eq!(seen, [("a", 1, 1), ("c", 3, 2)], "known ones once each, in id order, with their counters");
    assert_eq!(
        found[0],
        inv.client.get_product(pb::GetProductRequest { product_id: "a".into() }).await.unwrap().into_inner()
    );

    let none = inv.client.get_products(ids(&["nope"])).await.unwrap().into_inner().products;
    assert!(none.is_empty());
    for bad in [ids(&[]), ids(&[""]), pb::GetProductsRequest { product_ids: vec!["x".into(); 101] }] {
        let status = expect_code(inv.client.get_products(bad).await, Code::InvalidArgument);
        assert!(status.message().contains("product"), "{}", status.message());
    }
    inv.stop().await;
}
