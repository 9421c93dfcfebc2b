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

/// One probe of a documented constraint: which field, where, the value sent, and whether the document
/// says it must be refused.
struct Probe {
    place: &'static str,
    name: String,
    value: serde_json::Value,
    refused: bool,
}

/// A string `len` characters long, distinct per probe (an `Idempotency-Key` reused for another body would be a
/// 422, not the answer under test).
fn text_of(len: usize, n: usize) -> String {
    let tag = format!("c{n}-");
    if len <= tag.len() { "a".repeat(len) } else { format!("{tag}{}", "a".repeat(len - tag.len())) }
}

/// An email address of exactly `len` characters (at least 70), of the shape the document's pattern allows.
fn email_of(len: usize) -> String {
    let local = "a".repeat(64);
    let rest = len - local.len() - 1;
    // Labels of at most 63 characters, dot-separated, the last one 2 or more.
    let mut domain = String::new();
    while rest - domain.len() > 64 {
        domain.push_str(&"b".repeat(62));
        domain.push('.');
    }
    domain.push_str(&"c".repeat(rest - domain.len()));
    format!("{local}@{domain}")
}

/// The probes a field's schema calls for: at each bound (accepted) and just past it (refused), and a control
/// character where the pattern forbids one.
fn probes_for(place: &'static str, name: &str, schema: &serde_json::Value, n: &mut usize) -> Vec<Probe> {
    use serde_json::json;
    let mut out = Vec::new();
    let base = *n;
    let mut probe = |value: serde_json::Value, refused: bool| {
        *n += 1;
        out.push(Probe { place, name: name.to_owned(), value, refused });
    };
    let kind = match &schema["type"] {
        serde_json::Value::Array(kinds) => kinds.iter().filter_map(|k| k.as_str()).find(|k| *k != "null"),
        k => k.as_str(),
    };
    match kind {
        Some("integer") => {
            if let Some(max) = schema["maximum"].as_i64() {
                probe(json!(max), false);
                probe(json!(max + 1), true);
            }
            if let Some(min) = schema["minimum"].as_i64() {
                probe(json!(min), false);
                probe(json!(min - 1), true);
            }
        }
        Some("string") => {
            let email = name == "email";
            if let Some(max) = schema["maxLength"].as_u64() {
                let max = max as usize;
                let (at, past) = if email {
                    (email_of(max), email_of(max + 1))
                } else {
                    (text_of(max, base), text_of(max + 1, base + 1))
                };
                probe(json!(at), false);
                probe(json!(past), true);
            }
            // An empty path segment is another route; an empty header or field is checked.
            if schema["minLength"].as_u64() == Some(1) && place != "path" {
                probe(json!(""), true);
            }
            let pattern = schema["pattern"].as_str().unwrap_or_default();
            // Header values cannot carry control characters at all; paths, queries and bodies can.
            if pattern.contains("\\u0000-\\u001F") && place != "header" {
                probe(json!("a\u{1}b"), true);
            }
            if email {
                probe(json!("not an address"), true);
            }
        }
        _ => {}
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_constraint_is_accepted_at_its_bound_and_refused_just_past_it() {
    use std::collections::HashMap;

    use serde_json::{Value, json};

    let smtp = ordermesh_testkit::smtp::SmtpServer::start().await;
    let mesh = spawn_mesh_with(Options { smtp_url: Some(smtp.url()), ..Default::default() }).await;
    mesh.product("doc-lamp", 1500, 1_000_000).await;
    assert_eq!(mesh.add("doc-client", "doc-lamp", 1).await.0, 200);
    let order = mesh.checkout("doc-client").await;
    mesh.final_order(&order).await;
    let fixtures: HashMap<&str, String> = HashMap::from([
        ("clientID", "doc-client".to_owned()),
        ("productID", "doc-lamp".to_owned()),
        ("orderID", order.clone()),
    ]);
    let (_, spec) = mesh.get("/documentation/openapi.json").await;
    let resolve = |schema: &Value| -> Value {
        match schema["$ref"].as_str() {
            Some(r) => spec.pointer(r.trim_start_matches('#')).cloned().unwrap_or_else(|| panic!("dangling {r}")),
            None => schema.clone(),
        }
    };

    let mut n = 0;
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let body_schema = resolve(&op["requestBody"]["content"]["application/json"]["schema"]);
            let mut probes = Vec::new();
            for p in &params {
                let place = match p["in"].as_str().unwrap() {
                    "path" => "path",
                    "query" => "query",
                    _ => "header",
                };
                probes.extend(probes_for(place, p["name"].as_str().unwrap(), &p["schema"], &mut n));
            }
            for (field, schema) in body_schema["properties"].as_object().into_iter().flatten() {
                probes.extend(probes_for("body", field, &resolve(schema), &mut n));
            }
            for probe in probes {
                // Every other field as a person would fill it in; the probed one set to the probe's value.
                let mut url = path.clone();
                let mut query = Vec::new();
                let mut headers = reqwest::header::HeaderMap::new();
                for p in &params {
                    let name = p["name"].as_str().unwrap();
                    let place = p["in"].as_str().unwrap();
                    let value = if probe.name == name && probe.place != "body" {
                        probe.value.clone()
                    } else if place == "header" {
                        json!(format!("base-{n}-{checked}"))
                    } else {
                        fill(name, &p["schema"], &fixtures)
                    };
                    let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
                    match place {
                        "path" => url = url.replace(&format!("{{{name}}}"), &urlencode(&text)),
                        "query" => query.push((name.to_owned(), text)),
                        _ => {
                            headers.insert(
                                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                                text.parse().unwrap(),
                            );
                        }
                    }
                }
                let mut request = mesh
                    .http
                    .request(method.to_uppercase().parse().unwrap(), mesh.url(&url))
                    .query(&query)
                    .headers(headers);
                if body_schema.is_object() {
                    let mut body = json!({});
                    for field in body_schema["required"].as_array().into_iter().flatten() {
                        let field = field.as_str().unwrap();
                        body[field] = fill(field, &resolve(&body_schema["properties"][field]), &fixtures);
                    }
                    if probe.place == "body" {
                        body[&probe.name] = probe.value.clone();
                    }
                    request = request.json(&body);
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let text = response.text().await.unwrap();
                let shown = probe.value.to_string();
                let shown =
                    if shown.len() > 40 { format!("{}… ({} chars)", &shown[..40], shown.len()) } else { shown };
                if probe.refused {
                    assert_eq!(
                        status, 400,
                        "{method} {path}: {} {} = {shown} breaks the document, answered {status}: {text}",
                        probe.place, probe.name
                    );
                    assert!(text.contains("\"status\":\"failure\""), "{method} {path}: the error shape: {text}");
                } else {
                    assert!(
                        status != 400 && status < 500,
                        "{method} {path}: {} {} = {shown} is within the document, answered {status}: {text}",
                        probe.place,
                        probe.name
                    );
                }
                checked += 1;
            }
        }
    }
    // Ids, quantities, the idempotency key, the email, the wait and the admin filters.
    assert!(checked >= 40, "only {checked} probes: the document lost its constraints?");
    mesh.stop().await;
}

/// Percent-encodes a path segment (reqwest would leave some characters as they are).
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
