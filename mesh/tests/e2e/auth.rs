//! Who may call: API keys made with the real `keys` command, roles, channels, revocation, rate limits, the
//! dashboard's sign-in, and the OpenAPI security scheme.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Options, TestMesh, spawn_mesh_with};

/// Runs `ordermesh keys …` against the test gateway's database; returns its output.
async fn keys(mesh: &TestMesh, args: &[&str]) -> (bool, String) {
    let (_, settings) = mesh.gateway_db.as_ref().expect("a mesh with keys");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ordermesh"))
        .arg("keys")
        .args(args)
        .env("GATEWAY_DATABASE_URL", settings.url.expose())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("ordermesh keys runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// Makes a key with the command and returns (key id, key).
async fn create_key(mesh: &TestMesh, role: &str, channel: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["create", "--role", role, "--channel", channel];
    args.extend_from_slice(extra);
    let (ok, out) = keys(mesh, &args).await;
    assert!(ok, "keys create failed: {out}");
    let key = out.lines().last().expect("the key is printed").trim().to_owned();
    let id = out.split_whitespace().nth(1).expect("the key id is printed").to_owned();
    assert!(key.starts_with(&format!("{id}_")), "key {key:?} does not start with its id {id:?}: {out}");
    (id, key)
}

async fn call(
    mesh: &TestMesh,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = mesh.http.request(method, mesh.url(path));
    if let Some(key) = key {
        request = request.header("X-API-Key", key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("gateway answers");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

fn is_failure(body: &Value) -> bool {
    body["status"] == "failure" && body["error"].as_str().is_some_and(|e| !e.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_roles_channels_and_revocation() {
    let mesh = spawn_mesh_with(Options { gateway_auth: true, gateways: 2, ..Default::default() }).await;
    mesh.product("mug", 1250, 10).await;
    // The order events, as another system (shipping, CRM) would read them.
    let conn = lapin::Connection::connect(ordermesh_bus::DEFAULT_AMQP_URL, Default::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let exclusive = lapin::options::QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    let events = channel.queue_declare("".into(), exclusive, Default::default()).await.unwrap();
    channel
        .queue_bind(
            events.name().clone(),
            mesh.topology.order_events().as_str().into(),
            "order.confirmed".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let (_, web) = create_key(&mesh, "shopper", "web", &[]).await;
    let (_, phone) = create_key(&mesh, "shopper", "phone", &["--note", "call centre"]).await;
    let (operator_id, operator) = create_key(&mesh, "operator", "sales-desk", &[]).await;
    let (ok, out) = keys(&mesh, &["create", "--role", "shopper", "--channel", "fax"]).await;
    assert!(!ok && out.contains("not configured"), "an unconfigured channel was accepted: {out}");
    let (ok, out) = keys(&mesh, &["create", "--role", "admin", "--channel", "web"]).await;
    assert!(!ok && out.contains("role"), "an unknown role was accepted: {out}");

    use reqwest::Method;
    let add = json!({"clientID": "ada", "productID": "mug", "quantity": 2});
    // No key, a made-up key, a malformed header: 401 in the usual shape, naming the scheme.
    for key in [None, Some("om_00000000_nothing"), Some("")] {
        let (status, headers, body) = call(&mesh, Method::POST, "/addToCart", key, Some(add.clone())).await;
        assert_eq!(status, 401, "key {key:?}: {body}");
        assert!(is_failure(&body), "{body}");
        assert!(headers.get("www-authenticate").is_some_and(|v| v.to_str().unwrap().contains("X-API-Key")));
    }
    // Health, readiness, metrics and the documentation stay open.
    for path in ["/healthz", "/readyz", "/metrics", "/documentation/openapi.json"] {
        assert_eq!(call(&mesh, Method::GET, path, None, None).await.0, 200, "{path} needs no key");
    }

    // A web shopper checks out: the order records channel web, and its events carry it.
    assert_eq!(call(&mesh, Method::POST, "/addToCart", Some(&web), Some(add.clone())).await.0, 200);
    let (status, _, accepted) =
        call(&mesh, Method::POST, "/checkOutCart", Some(&web), Some(json!({"clientID": "ada"}))).await;
    assert_eq!(status, 202, "{accepted}");
    let order_id = accepted["orderID"].as_str().unwrap().to_owned();
    let path = format!("/orders/{order_id}?waitSeconds=10");
    let (status, _, order) = call(&mesh, Method::GET, &path, Some(&web), None).await;
    assert_eq!((status, order["status"].as_str(), order["channel"].as_str()), (200, Some("CONFIRMED"), Some("web")));
    assert_eq!(mesh.count("SELECT count(*) FROM orders WHERE order_id = $1 AND channel = 'web'", &order_id).await, 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let event: Value = loop {
        let got = channel.basic_get(events.name().clone(), Default::default()).await.unwrap();
        if let Some(message) = got {
            let envelope: Value = serde_json::from_slice(&message.delivery.data).unwrap();
            if envelope["payload"]["order_id"] == order_id.as_str() {
                break envelope["payload"].clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no order.confirmed event for {order_id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(event["channel"], "web", "{event}");
    assert_eq!(event["lines"], json!([{"product_id": "mug", "quantity": 2, "unit_price_cents": 1250}]), "{event}");
    let _ = conn.close(200, "ok".into()).await;
    // Another channel's shopper key does not see it; an operator key does.
    let (status, _, body) = call(&mesh, Method::GET, &path, Some(&phone), None).await;
    assert_eq!(status, 404, "a phone key read a web order: {body}");
    assert!(is_failure(&body));
    // In the same words as an id never used: the answer does not tell that the order exists in another channel.
    let (status, _, never) = call(&mesh, Method::GET, "/orders/never-used-order-id", Some(&phone), None).await;
    assert_eq!(status, 404, "{never}");
    assert_eq!(
        body["error"].as_str().map(|e| e.replace(order_id.as_str(), "<id>")),
        never["error"].as_str().map(|e| e.replace("never-used-order-id", "<id>")),
        "another channel's order and an unknown id must read alike"
    );
    assert_eq!(call(&mesh, Method::GET, &path, Some(&operator), None).await.2["channel"], "web");

    // Roles: a shopper key may not use the operators' routes.
    for path in ["/admin/overview", "/admin/orders", "/dashboard"] {
        let (status, _, body) = call(&mesh, Method::GET, path, Some(&web), None).await;
        assert_eq!(status, 403, "{path} with a shopper key: {body}");
        assert!(is_failure(&body), "{body}");
        assert_eq!(call(&mesh, Method::GET, path, Some(&operator), None).await.0, 200, "{path} with an operator key");
    }
    // The dashboard filters by channel.
    let (_, _, web_orders) = call(&mesh, Method::GET, "/admin/orders?channel=web", Some(&operator), None).await;
    assert_eq!(web_orders["orders"][0]["orderID"], order_id.as_str());
    assert_eq!(web_orders["orders"][0]["channel"], "web");
    let (_, _, phone_orders) = call(&mesh, Method::GET, "/admin/orders?channel=phone", Some(&operator), None).await;
    assert_eq!(phone_orders["orders"], json!([]));
    assert_eq!(call(&mesh, Method::GET, "/admin/orders?channel=Web%20Store", Some(&operator), None).await.0, 400);

    // A person opening the dashboard signs in with an operator key and gets a session cookie, which
    // works for the operators' reads only.
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = browser.get(mesh.url("/dashboard")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(page.status().as_u16(), 401);
    assert!(page.text().await.unwrap().contains("action=\"/dashboard/session\""));
    let signed = |key: &str| {
        browser
            .post(mesh.url("/dashboard/session"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("key={key}"))
            .send()
    };
    assert_eq!(signed(&web).await.unwrap().status().as_u16(), 403, "a shopper key signed in to the dashboard");
    let session = signed(&operator).await.unwrap();
    assert_eq!(session.status().as_u16(), 303);
    let set_cookie = session.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(set_cookie.contains("Max-Age=28800"), "the session expires (8 hours by default): {set_cookie}");
    assert!(!set_cookie.contains(&operator), "the cookie holds the key itself: {set_cookie}");
    assert!(!set_cookie.contains("Secure"), "Secure over plain HTTP would lose the cookie: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let with_cookie = browser.get(mesh.url("/admin/overview")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(with_cookie.status().as_u16(), 200);
    let on_other_gateway = browser.get(format!("{}/admin/overview", mesh.gateways[1])).header("cookie", &cookie);
    assert_eq!(on_other_gateway.send().await.unwrap().status().as_u16(), 200, "a session is every gateway's");
    let cart_with_cookie = browser.post(mesh.url("/addToCart")).header("cookie", &cookie).json(&add).send().await;
    assert_eq!(cart_with_cookie.unwrap().status().as_u16(), 401, "the session cookie worked beyond the dashboard");
    // Behind a TLS-terminating proxy the cookie is Secure.
    let behind_tls = browser
        .post(mesh.url("/dashboard/session"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", "https")
        .body(format!("key={operator}"))
        .send()
        .await
        .unwrap();
    assert!(behind_tls.headers()["set-cookie"].to_str().unwrap().contains("; Secure"));
    // Signing out ends the session at once, and clears the cookie.
    let out_cookie = behind_tls.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let signed_out =
        browser.post(mesh.url("/dashboard/session/end")).header("cookie", &out_cookie).send().await.unwrap();
    assert_eq!(signed_out.status().as_u16(), 303);
    assert!(signed_out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let after = browser.get(mesh.url("/admin/overview")).header("cookie", &out_cookie).send().await.unwrap();
    assert_eq!(after.status().as_u16(), 401, "a signed-out session still works");

    // Revoked: refused within a second on every gateway (both had it cached), and listed as revoked.
    let on_second = |key: String| {
        let request = mesh.http.get(format!("{}/admin/overview", mesh.gateways[1])).header("X-API-Key", key);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(on_second(operator.clone()).await, 200);
    let (ok, out) = keys(&mesh, &["revoke", &operator_id]).await;
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, _, body) = call(&mesh, Method::GET, "/admin/overview", Some(&operator), None).await;
    assert_eq!(status, 401, "a revoked key still works a second later: {body}");
    assert_eq!(on_second(operator.clone()).await, 401, "a revoked key still works on the second gateway");
    let session_after = browser.get(mesh.url("/admin/overview")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(session_after.status().as_u16(), 401, "a session outlived its revoked key");
    let (ok, listing) = keys(&mesh, &["list"]).await;
    assert!(ok, "{listing}");
    let row = listing.lines().find(|l| l.starts_with(&operator_id)).expect("the key is listed");
    assert!(row.contains("revoked"), "{listing}");
    assert!(listing.contains("call centre"), "{listing}");
    assert!(!listing.contains(&web) && !listing.contains(&operator), "a key was printed by list");
    let (ok, out) = keys(&mesh, &["revoke", &operator_id]).await;
    assert!(!ok && out.contains("no live key"), "{out}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let mesh = spawn_mesh_with(Options { gateway_auth: true, ..Default::default() }).await;
    let (_, slow) = create_key(&mesh, "shopper", "web", &["--rate", "2"]).await;
    let (_, other) = create_key(&mesh, "shopper", "web", &[]).await;
    let mut limited = None;
    for _ in 0..10 {
        let (status, headers, body) = call(&mesh, reqwest::Method::GET, "/products", Some(&slow), None).await;
        if status == 429 {
            limited = Some((headers, body));
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let (headers, body) = limited.expect("ten requests at once stayed within 2 per second");
    assert!(is_failure(&body), "{body}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    // Another key is not held back by it.
    assert_eq!(call(&mesh, reqwest::Method::GET, "/products", Some(&other), None).await.0, 200);
    // After the wait it names, the key is served again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(call(&mesh, reqwest::Method::GET, "/products", Some(&slow), None).await.0, 200);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_declares_the_api_key_scheme() {
    let mesh = spawn_mesh_with(Options { gateway_auth: true, ..Default::default() }).await;
    let (_, doc) = mesh.get("/documentation/openapi.json").await;
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"],
        json!({"type": "apiKey", "in": "header", "name": "X-API-Key", "description": doc["components"]["securitySchemes"]["api_key"]["description"]})
    );
    for (path, method) in [
        ("/addToCart", "post"),
        ("/orders/{orderID}", "get"),
        ("/admin/overview", "get"),
        ("/clients/{clientID}", "put"),
    ] {
        let op = &doc["paths"][path][method];
        assert_eq!(op["security"], json!([{"api_key": []}]), "{path}");
        for code in ["401", "403", "429"] {
            assert!(op["responses"][code].is_object(), "{path} does not document {code}");
        }
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert!(doc["paths"][path]["get"]["security"].is_null(), "{path} is documented as needing a key");
    }
    mesh.stop().await;
}
