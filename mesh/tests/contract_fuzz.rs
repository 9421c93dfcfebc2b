//! The OpenAPI document driven by a property-based fuzzer (schemathesis, from PyPI) against the real mesh with
//! API keys required and an operator key: no server error, no schema-valid request refused as invalid, no
//! schema-violating request accepted, no request served without a valid key, no response outside its own
//! schema, status or content type; valid and invalid requests and stateful sequences, for about a minute.
//! Its own test binary, so that its load runs alone.

#[allow(dead_code)]
#[path = "e2e/helpers/mod.rs"]
mod helpers;

use std::{path::PathBuf, time::Duration};

use helpers::{Options, spawn_mesh_with};

/// How long schemathesis generates requests.
const FUZZ_SECONDS: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_broken_promise_in_the_openapi_document() {
    ordermesh_testkit::watchdog::arm(Duration::from_secs(FUZZ_SECONDS + 240));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let schemathesis = root.join(".venv-tools/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "schemathesis is missing: run the README's test command (scripts/test installs it into .venv-tools)"
    );
    let smtp = ordermesh_testkit::smtp::SmtpServer::start().await;
    let mesh = spawn_mesh_with(Options { gateway_auth: true, smtp_url: Some(smtp.url()), ..Default::default() }).await;
    // Products the examples name, with stock to spare.
    for id in ["mug", "hoodie", "lamp"] {
        mesh.product(id, 1_000, 1_000_000).await;
    }
    let (_, settings) = mesh.gateway_db.as_ref().expect("a mesh with keys");
    let made = tokio::process::Command::new(env!("CARGO_BIN_EXE_ordermesh"))
        .args(["keys", "create", "--role", "operator", "--channel", "web", "--rate", "100000", "--note", "fuzzer"])
        .env("GATEWAY_DATABASE_URL", settings.url.expose())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("ordermesh keys runs");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let key = String::from_utf8_lossy(&made.stdout).lines().last().expect("the key").trim().to_owned();

    let run = tokio::process::Command::new(&schemathesis)
        .arg("--config-file")
        .arg(root.join("mesh/tests/contract/schemathesis.toml"))
        .arg("run")
        .arg(mesh.url("/documentation/openapi.json"))
        .args(["-H", &format!("X-API-Key: {key}")])
        .args([
            "--checks",
            "not_a_server_error,positive_data_acceptance,negative_data_rejection,ignored_auth,\
             response_schema_conformance,status_code_conformance,content_type_conformance",
        ])
        // One worker: hypothesis's reflection on Python 3.11 is not safe across threads (a "Runtime Error" in
        // schemathesis itself, not in the API, was seen with two).
        .args(["--max-time", &FUZZ_SECONDS.to_string(), "--workers", "1", "--request-timeout", "40"])
        // Prometheus's text, not JSON: nothing for the checks to read.
        .args(["--exclude-path", "/metrics"])
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(FUZZ_SECONDS + 120), run)
        .await
        .expect("schemathesis ends within its time budget")
        .expect("schemathesis runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // The summary (seed, cases, failures) in every log; the whole report when it failed.
    let summary = text.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    eprintln!("schemathesis:\n{summary}");
    assert!(out.status.success(), "schemathesis found broken promises:\n{text}");
    assert!(text.contains("generated"), "schemathesis generated no test cases:\n{text}");
    mesh.stop().await;
}
