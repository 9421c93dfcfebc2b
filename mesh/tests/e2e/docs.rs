//! The OpenAPI document covers every route, and Swagger UI is served from the gateway itself.

use crate::helpers::{Options, spawn_mesh, spawn_mesh_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route_and_swagger_ui_is_served_offline() {
    let mesh = spawn_mesh().await;
    let (status, spec) = mesh.get("/documentation/openapi.json").await;
    assert_eq!(status, 200);
    let paths = spec["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/addToCart", "post"),
        ("/checkOutCart", "post"),
        ("/orders/{orderID}", "get"),
        ("/cart/{clientID}", "get"),
        ("/cart/{clientID}/items/{productID}", "delete"),
        ("/products", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
    }
    let add = &spec["paths"]["/addToCart"]["post"]["responses"];
    for code in ["200", "400", "404", "409", "413", "415", "503", "504"] {
        assert!(add.get(code).is_some(), "/addToCart lacks {code}");
    }
    assert!(spec["components"]["schemas"]["StatusBody"].is_object(), "the error shape is documented");
    // A success is shown as a success: the shared body's own example is a failure's.
    for (path, method) in
        [("/addToCart", "post"), ("/cart/{clientID}/items/{productID}", "delete"), ("/healthz", "get")]
    {
        let example = &spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]["example"];
        assert_eq!(example, &serde_json::json!({"status": "success", "error": ""}), "{method} {path}'s 200 example");
    }
    // Shop, operators and operations in groups of their own, every route in one.
    let tags: Vec<&str> = spec["tags"].as_array().expect("tags").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(tags, ["shop", "admin", "operations"]);
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let tag = operation["tags"][0].as_str().unwrap_or("none");
            let expected = if path.starts_with("/admin") || path == "/dashboard" {
                "admin"
            } else if ["/healthz", "/readyz", "/metrics"].contains(&path.as_str()) {
                "operations"
            } else {
                "shop"
            };
            assert_eq!(tag, expected, "{method} {path}");
        }
    }

    let page = mesh.http.get(mesh.url("/documentation/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "Swagger UI page");
    let asset = mesh.http.get(mesh.url("/documentation/swagger-ui-bundle.js")).send().await.unwrap();
    assert_eq!(asset.status().as_u16(), 200, "assets come from the gateway, not the internet");
    mesh.stop().await;
}

/// A value for a parameter or body field, from the document's schema and a fixture per name (the ids of
/// what the test created), as a person trying the route in Swagger UI would fill it in.
fn fill(
    name: &str,
    schema: &serde_json::Value,
    fixtures: &std::collections::HashMap<&str, String>,
) -> serde_json::Value {
    if let Some(v) = fixtures.get(name) {
        return serde_json::Value::String(v.clone());
    }
    // The document's own example, where it gives one (an email address must look like one).
    if let Some(example) = schema.get("example").filter(|e| e.is_string() || e.is_number()) {
        return example.clone();
    }
    // OpenAPI 3.1 writes an optional value's type as a list with "null".
    let kind = match &schema["type"] {
        serde_json::Value::Array(kinds) => kinds.iter().filter_map(|k| k.as_str()).find(|k| *k != "null"),
        k => k.as_str(),
    };
    match kind {
        Some("integer") => serde_json::json!(schema["minimum"].as_i64().unwrap_or(1).max(1)),
        Some("string") => serde_json::json!("x"),
        other => panic!("no test value for {name} of type {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_parameter_matches_the_router_and_every_route_runs_from_the_document() {
    use std::collections::{BTreeSet, HashMap};

    use serde_json::{Value, json};

    // With a notifier, so the profile routes are answered too.
    let smtp = ordermesh_testkit::smtp::SmtpServer::start().await;
    let mesh = spawn_mesh_with(Options { smtp_url: Some(smtp.url()), ..Default::default() }).await;
    mesh.product("doc-lamp", 1500, 5).await;
    let (_, spec) = mesh.get("/documentation/openapi.json").await;
    let resolve = |schema: &Value| -> Value {
        match schema["$ref"].as_str() {
            Some(r) => spec.pointer(r.trim_start_matches('#')).cloned().unwrap_or_else(|| panic!("dangling {r}")),
            None => schema.clone(),
        }
    };

    // The order a shopper would go in, so each route meets the state it needs; any other route runs after.
    let plan = [
        ("post", "/addToCart"),
        ("get", "/cart/{clientID}"),
        ("delete", "/cart/{clientID}/items/{productID}"),
        ("post", "/addToCart"),
        ("post", "/checkOutCart"),
        ("get", "/orders/{orderID}"),
    ];
    let mut operations: Vec<(String, String)> = plan.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if !operations.iter().any(|(m, p)| m == method && p == path) {
                operations.push((method.clone(), path.clone()));
            }
        }
    }

    let mut fixtures: HashMap<&str, String> =
        HashMap::from([("clientID", "doc-client".to_owned()), ("productID", "doc-lamp".to_owned())]);
    for (n, (method, path)) in operations.iter().enumerate() {
        let op = &spec["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        let params = op["parameters"].as_array().cloned().unwrap_or_default();

        // Path parameters are exactly the path's placeholders, each required; query parameters are optional.
        let placeholders: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let in_path: BTreeSet<String> =
            params.iter().filter(|p| p["in"] == "path").map(|p| p["name"].as_str().unwrap().to_owned()).collect();
        assert_eq!(placeholders, in_path, "{method} {path}: path parameters differ from the path");
        for p in &params {
            let (name, place) = (p["name"].as_str().unwrap(), p["in"].as_str().unwrap());
            assert!(["path", "query", "header"].contains(&place), "{method} {path}: {name} is in {place}");
            if place == "path" {
                assert_eq!(p["required"], true, "{method} {path}: path parameter {name} must be required");
            } else {
                assert_ne!(p["required"], true, "{method} {path}: {place} parameter {name} must be optional");
            }
        }

        // Run it as the document describes it.
        let mut url = path.clone();
        let mut query = Vec::new();
        let mut request_headers = reqwest::header::HeaderMap::new();
        for p in &params {
            let name = p["name"].as_str().unwrap();
            let value = fill(name, &p["schema"], &fixtures);
            let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
            match p["in"].as_str().unwrap() {
                "path" => url = url.replace(&format!("{{{name}}}"), &text),
                "query" => query.push((name.to_owned(), text)),
                _ => {
                    request_headers.insert(
                        reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                        format!("doc-{n}").parse().unwrap(),
                    );
                }
            }
        }
        let mut request = mesh
            .http
            .request(method.to_uppercase().parse().unwrap(), mesh.url(&url))
            .query(&query)
            .headers(request_headers);
        let body_schema = &op["requestBody"]["content"]["application/json"]["schema"];
        if !body_schema.is_null() {
            let schema = resolve(body_schema);
            let mut body = json!({});
            for field in schema["required"].as_array().unwrap() {
                let field = field.as_str().unwrap();
                body[field] = fill(field, &resolve(&schema["properties"][field]), &fixtures);
            }
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16().to_string();
        let text = response.text().await.unwrap();
        assert!(
            op["responses"].get(&status).is_some(),
            "{method} {path} ({url}) answered {status}, which its description does not list: {text}"
        );
        assert!(!text.contains("no such route"), "{method} {path} ({url}) reached no route");
        if path == "/checkOutCart" {
            let body: Value = serde_json::from_str(&text).unwrap();
            fixtures.insert("orderID", body["orderID"].as_str().expect("an order id").to_owned());
        }
        // With the shopper's own ids every route succeeds, except removing from the emptied cart.
        let expect_success = !(path == "/cart/{clientID}/items/{productID}" && n > 2);
        if expect_success {
            assert!(status.starts_with('2'), "{method} {path} ({url}) answered {status}: {text}");
        }
    }
    mesh.stop().await;
}
