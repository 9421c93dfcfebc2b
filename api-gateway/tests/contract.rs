//! The OpenAPI document states the rules the gateway enforces: for each constrained value, what the
//! document's pattern and lengths admit is exactly what the gateway's own validation accepts, over values
//! chosen at the edges (blank, Unicode spaces, control characters, lengths, the email's shape).

use api_gateway::ApiDoc;
use ordermesh_messages::{Channel, ClientId, Email, IdempotencyKey};
use serde_json::Value;
use utoipa::OpenApi;

/// The schema of `name` among the parameters of `method path`.
fn parameter(spec: &Value, path: &str, method: &str, name: &str) -> Value {
    spec["paths"][path][method]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))["schema"]
        .clone()
}

/// Whether `value` is admitted by a string schema's `pattern`, `minLength` and `maxLength`.
fn admits(schema: &Value, value: &str) -> bool {
    let pattern = schema["pattern"].as_str().expect("a pattern");
    let chars = value.chars().count() as u64;
    regex::Regex::new(pattern).expect("the pattern compiles").is_match(value)
        && schema["minLength"].as_u64().is_none_or(|min| chars >= min)
        && schema["maxLength"].as_u64().is_none_or(|max| chars <= max)
}

fn agree(what: &str, schema: &Value, samples: &[String], accepts: impl Fn(&str) -> bool) {
    for sample in samples {
        assert_eq!(
            admits(schema, sample),
            accepts(sample),
            "{what}: the document and the gateway disagree on {sample:?} (schema {schema})"
        );
    }
}

#[test]
fn the_document_admits_exactly_the_ids_keys_and_emails_the_gateway_accepts() {
    let spec = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let ids: Vec<String> = [
        "", " ", "   ", "\u{2003}", "\u{a0}", "a", " a ", "a b", "é", "a\nb", "\t", "a\u{7f}", "a\u{85}", "日本",
        "alice", "-", "%41",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain(["x".repeat(100), "x".repeat(101), "é".repeat(100), format!(" {}", "x".repeat(99))])
    .collect();
    let id_ok = |s: &str| ClientId::parse(s).is_ok();
    agree("clientID in a path", &parameter(&spec, "/cart/{clientID}", "get", "clientID"), &ids, id_ok);
    agree("orderID in a path", &parameter(&spec, "/orders/{orderID}", "get", "orderID"), &ids, id_ok);
    let body = &spec["components"]["schemas"]["AddToCartRequest"]["properties"];
    agree("clientID in a body", &body["clientID"], &ids, id_ok);
    agree("productID in a body", &body["productID"], &ids, id_ok);

    let keys: Vec<String> = ["", " ", "k", " k", "k ", "a b", "é", "k\t", "~!", "\u{7f}"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(["k".repeat(200), "k".repeat(201)])
        .collect();
    let key = parameter(&spec, "/addToCart", "post", "Idempotency-Key");
    // A header's value loses its outer spaces on the way (HTTP trims them), so the gateway sees it trimmed.
    agree("Idempotency-Key", &key, &keys, |s| s == s.trim_matches(' ') && IdempotencyKey::parse(s).is_ok());

    let emails: Vec<String> = [
        "ada@example.com",
        "a.b+c@sub.example.co",
        "a@b",
        "@example.com",
        "ada@",
        "ada@@example.com",
        "ada example@x.com",
        "<ada@example.com>",
        "ada@example..com",
        "ada@-example.com",
        "ada@example-.com",
        "ada@exa_mple.com",
        "a:b@example.com",
        "é@example.com",
        "ada@example.com\r\nBcc: x@y.z",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([format!("{}@example.com", "a".repeat(64)), format!("{}@example.com", "a".repeat(65))])
    .collect();
    let email = &spec["components"]["schemas"]["PutClientRequest"]["properties"]["email"];
    agree("email", email, &emails, |s| Email::parse(s).is_ok());

    let channels: Vec<String> = ["", "web", "sales-desk", "-web", "web-", "Web", " web", "w b", "w_b", "9"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(["c".repeat(32), "c".repeat(33)])
        .collect();
    let channel = parameter(&spec, "/admin/orders", "get", "channel");
    // An empty channel filters nothing; any other must be a channel's name, as sent.
    agree("channel", &channel, &channels, |s| s.is_empty() || Channel::parse(s).is_ok());
}
