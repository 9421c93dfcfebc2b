//! Every input rule: a 4xx with the JSON error shape, never a 500 or a hang.

use serde_json::{Value, json};

use crate::helpers::spawn_mesh;

fn assert_failure(status: u16, body: &Value, expected: u16, what: &str) {
    assert_eq!(status, expected, "{what}: {body}");
    assert_eq!(body["status"], "failure", "{what}: {body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_to_cart_rejects_bad_input_with_a_clear_4xx() {
    let mesh = spawn_mesh().await;
    mesh.product("mug", 100, 20_000).await;
    let long = "x".repeat(101);
    let cases = [
        (json!({"clientID": "a", "productID": "mug"}), "missing quantity"),
        (json!({"productID": "mug", "quantity": 1}), "missing clientID"),
        (json!({"clientID": "a", "productID": "mug", "quantity": 0}), "zero"),
        (json!({"clientID": "a", "productID": "mug", "quantity": -1}), "negative"),
        (json!({"clientID": "a", "productID": "mug", "quantity": 1.5}), "fractional"),
        (json!({"clientID": "a", "productID": "mug", "quantity": 0.0}), "zero as a float"),
        (json!({"clientID": "a", "productID": "mug", "quantity": "3"}), "string"),
        (json!({"clientID": "a", "productID": "mug", "quantity": 10_001}), "too many"),
        (json!({"clientID": "a", "productID": "mug", "quantity": 1e30}), "huge"),
        (json!({"clientID": "a", "productID": "mug", "quantity": null}), "null"),
        (json!({"clientID": "", "productID": "mug", "quantity": 1}), "empty client"),
        (json!({"clientID": long, "productID": "mug", "quantity": 1}), "long client"),
        (json!({"clientID": "a", "productID": 7, "quantity": 1}), "number as id"),
        (json!({"clientID": "a", "productID": "mug", "quantity": 1, "extra": true}), "unknown field"),
        (json!(["clientID"]), "array"),
        (json!(["a", "mug", 1]), "an array in the fields' order"),
        (json!([]), "empty array"),
        (json!("a string"), "a string"),
        (json!(7), "a number"),
        (json!(null), "null body"),
    ];
    for (body, what) in cases {
        let (status, answer) = mesh.post(0, "/addToCart", body).await;
        assert_failure(status, &answer, 400, what);
    }
    // 1 and 10,000 are the bounds, both accepted.
    assert_eq!(mesh.add("a", "mug", 1).await.0, 200);
    assert_eq!(mesh.add("b", "mug", 10_000).await.0, 200);
    // JSON has one number type: `2.0` is the integer 2, as JSON Schema's `integer` reads it, so two units.
    let whole = json!({"clientID": "c", "productID": "mug", "quantity": 2.0});
    assert_eq!(mesh.post(0, "/addToCart", whole).await.0, 200);
    let (_, cart) = mesh.get("/cart/c").await;
    assert_eq!(cart["items"][0]["quantity"], 2, "{cart}");
    let (status, answer) = mesh.add("a", "ghost", 1).await;
    assert_failure(status, &answer, 404, "unknown product");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_content_types_sizes_and_routes() {
    let mesh = spawn_mesh().await;
    let http = &mesh.http;
    let send = |path: &str, content_type: Option<&str>, body: Vec<u8>| {
        let mut request = http.post(mesh.url(path)).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, b) = send("/addToCart", Some("application/json"), b"{\"clientID\": ".to_vec()).await;
    assert_failure(s, &b, 400, "truncated JSON");
    let (s, b) = send("/addToCart", Some("application/json"), b"".to_vec()).await;
    assert_failure(s, &b, 400, "empty body");
    let (s, b) =
        send("/addToCart", Some("text/plain"), br#"{"clientID":"a","productID":"m","quantity":1}"#.to_vec()).await;
    assert_failure(s, &b, 415, "wrong content type");
    let (s, b) = send("/addToCart", None, br#"{"clientID":"a","productID":"m","quantity":1}"#.to_vec()).await;
    assert_failure(s, &b, 415, "no content type");
    let mut big = br#"{"clientID":"a","productID":"m","quantity":1,"pad":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 70 * 1024));
    big.extend(br#""}"#);
    let (s, b) = send("/addToCart", Some("application/json"), big).await;
    assert_failure(s, &b, 413, "oversize body");
    let (s, b) = send("/checkOutCart", Some("application/json"), br#"{"clientID": 12}"#.to_vec()).await;
    assert_failure(s, &b, 400, "checkout with a number");

    let (s, b) = mesh.get("/no/such/route").await;
    assert_failure(s, &b, 404, "unknown route");
    let r = http.get(mesh.url("/addToCart")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let (s, b) = mesh.get("/orders/does-not-exist").await;
    assert_failure(s, &b, 404, "unknown order");
    let (s, b) = mesh.get(&format!("/orders/{}", "x".repeat(101))).await;
    assert_failure(s, &b, 400, "over-long order id");
    let (s, b) = mesh.get("/orders/abc?waitSeconds=-1").await;
    assert_failure(s, &b, 400, "negative wait");
    let (s, b) = mesh.get("/orders/abc?waitSeconds=31").await;
    assert_failure(s, &b, 400, "wait over the bound");
    let (s, b) = mesh.post(0, "/checkOutCart", json!({"clientID": "nobody"})).await;
    assert_failure(s, &b, 409, "empty cart");
    let r = http.delete(mesh.url("/cart/a/items/none")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_limits_follow_available_stock_and_items_can_be_removed() {
    let mesh = spawn_mesh().await;
    mesh.product("hoodie", 4500, 3).await;
    assert_eq!(mesh.add("fay", "hoodie", 2).await.0, 200);
    let (status, body) = mesh.add("fay", "hoodie", 2).await;
    assert_failure(status, &body, 409, "cart would exceed available");
    assert!(body["error"].as_str().unwrap().contains("hoodie"));
    assert_eq!(mesh.add("fay", "hoodie", 1).await.0, 200, "exactly the available amount is fine");

    let r = mesh.http.delete(mesh.url("/cart/fay/items/hoodie")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(mesh.get("/cart/fay").await.1["items"], json!([]));
    mesh.stop().await;
}

/// A cart whose total at current prices does not fit in 64 bits of cents (ten products at inventory's highest
/// price, a million of each: a price raised after the adds) is refused with a 409, never wrapped into a wrong or
/// negative amount that checkout-manager would then refuse as poison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_total_beyond_any_amount_is_refused_not_wrapped() {
    let mesh = spawn_mesh().await;
    for i in 0..10 {
        let id = format!("gold{i}");
        mesh.product(&id, 1_000_000_000_000, 1_000_000).await;
        sqlx::query("INSERT INTO cart_items (client_id, product_id, quantity) VALUES ('whale', $1, 1000000)")
            .bind(&id)
            .execute(&mesh.cart_db)
            .await
            .expect("a cart line");
    }
    let (status, body) = mesh.get("/cart/whale").await;
    assert_failure(status, &body, 409, "the cart's total");
    let (status, body) = mesh.post(0, "/checkOutCart", json!({"clientID": "whale"})).await;
    assert_failure(status, &body, 409, "checking out a cart beyond any amount");
    let made: i64 = sqlx::query_scalar("SELECT count(*) FROM checkouts WHERE client_id = 'whale'")
        .fetch_one(&mesh.cart_db)
        .await
        .unwrap();
    assert_eq!(made, 0, "nothing was checked out");
    // One product fewer still fits (9 x 10^18 cents): the same cart is then shown with its true total.
    sqlx::query("DELETE FROM cart_items WHERE client_id = 'whale' AND product_id = 'gold9'")
        .execute(&mesh.cart_db)
        .await
        .unwrap();
    let (status, body) = mesh.get("/cart/whale").await;
    assert_eq!((status, body["totalCents"].as_i64()), (200, Some(9_000_000_000_000_000_000)), "{body}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_names_the_field_once_and_says_what_is_allowed_without_parser_internals() {
    let mesh = spawn_mesh().await;
    mesh.product("mug", 100, 10).await;
    let error = |body: Value| body["error"].as_str().unwrap_or_default().to_owned();
    let cases = [
        (
            json!({"clientID": "a", "productID": "mug", "quantity": 1.5}),
            "quantity must be an integer from 1 to 10000, got 1.5",
        ),
        (
            json!({"clientID": "a", "productID": "mug", "quantity": 10_001.0}),
            "quantity must be an integer from 1 to 10000, got 10001.0",
        ),
        (
            json!({"clientID": "a", "productID": "mug", "quantity": 0}),
            "quantity must be an integer from 1 to 10000, got 0",
        ),
        (
            json!({"clientID": "a", "productID": "mug", "quantity": "3"}),
            "quantity must be an integer from 1 to 10000, got a string",
        ),
        (json!({"clientID": "a", "productID": "mug"}), "quantity is required"),
        (json!({"clientID": "", "productID": "mug", "quantity": 1}), "clientID must not be empty or blank"),
        (json!(["erin", "mug", 1]), "the body must be a JSON object"),
        (json!([]), "the body must be a JSON object"),
    ];
    for (body, expected) in cases {
        let (status, answer) = mesh.post(0, "/addToCart", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(error(answer), expected, "{body}");
    }
    let (status, answer) =
        mesh.post(0, "/addToCart", json!({"clientID": "a", "productID": "mug", "quantity": 1, "x": 1})).await;
    assert_eq!(status, 400);
    let text = error(answer);
    assert!(text.starts_with("unknown field x; allowed:") && text.contains("quantity"), "{text}");
    for answer in [
        mesh.post(0, "/addToCart", json!({"clientID": 5, "productID": "mug", "quantity": 1})).await.1,
        mesh.http
            .post(mesh.url("/addToCart"))
            .header("content-type", "application/json")
            .body("{\"clientID\": ")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap(),
    ] {
        let text = error(answer);
        assert!(!text.contains("line") && !text.contains("column"), "parser position leaked: {text}");
        assert!(text.matches("clientID").count() <= 1, "field named twice: {text}");
    }

    // Path and query errors have the same shape, and say what is allowed.
    let (status, answer) = mesh.get("/cart/a%FFb").await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["status"], "failure");
    assert_eq!(error(answer), "clientID in the path must be valid UTF-8");
    for query in ["waitSeconds=-1", "waitSeconds=abc", "waitSeconds=31", "waitSeconds=1.5"] {
        let (status, answer) = mesh.get(&format!("/orders/abc?{query}")).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(error(answer), "waitSeconds must be a whole number from 0 to 30", "{query}");
    }
    let (status, answer) = mesh.get("/orders/abc?wait=1").await;
    assert_eq!(status, 400);
    assert_eq!(error(answer), "unknown query parameter wait; allowed: waitSeconds");
    mesh.stop().await;
}
