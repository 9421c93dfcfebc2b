//! The operators' dashboard, in a real browser: Debian's chromium driven over WebDriver (chromedriver) shows
//! orders that ended CONFIRMED, REJECTED and PAYMENT_DECLINED, and a message dead-lettered during the test.
//! The admin JSON API it renders is checked first on its own.

use std::{process::Stdio, time::Duration};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{
    faults::publish_raw,
    helpers::{Options, spawn_mesh_with},
};

/// A WebDriver session on a chromedriver this test started; both end with it.
struct Browser {
    http: reqwest::Client,
    session: String,
    base: String,
    driver: tokio::process::Child,
}

impl Browser {
    async fn start() -> Self {
        let driver_path = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = tokio::process::Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{driver_path} did not start ({e}): install Debian's chromium and chromium-driver (scripts/test does)"
                )
            });
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not answer on {base}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let chrome = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chrome,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1700"]
            }
        }}});
        let reply: Value =
            http.post(format!("{base}/session")).json(&capabilities).send().await.unwrap().json().await.unwrap();
        let session = reply["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {reply}")).to_owned();
        Self { http, session, base, driver }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(reply["value"]["error"].is_null(), "WebDriver {path}: {reply}");
        reply["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    async fn run(&self, script: &str) -> Value {
        self.command(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// Waits (up to 20 s) until `script` returns true in the page.
    async fn wait_for(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.run(script).await == Value::Bool(true) {
                return;
            }
            let page = self.run("return document.body.innerText").await;
            assert!(
                Instant::now() < deadline,
                "the dashboard never showed {what}; it shows:\n{}",
                page.as_str().unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&self) -> Vec<u8> {
        let png = self.command(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap()
    }

    async fn quit(mut self) {
        let _ = self.http.delete(format!("{}/session/{}", self.base, self.session)).send().await;
        let _ = self.driver.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_orders_by_final_status_and_dead_letters_in_a_real_browser() {
    // With a notifier, so every service the dashboard lists is there.
    let smtp = ordermesh_testkit::smtp::SmtpServer::start().await;
    let mesh = spawn_mesh_with(Options { smtp_url: Some(smtp.url()), ..Default::default() }).await;
    mesh.product("dash-lamp", 1_000, 10).await;
    mesh.product("dash-bowl", 2_500, 3).await;
    mesh.product("dash-vase", 60_000, 5).await;

    assert_eq!(mesh.add("dash-ann", "dash-lamp", 1).await.0, 200);
    let confirmed = mesh.checkout("dash-ann").await;
    assert_eq!(mesh.add("dash-ben", "dash-bowl", 3).await.0, 200);
    mesh.product("dash-bowl", 2_500, 1).await; // sold elsewhere before checkout
    let rejected = mesh.checkout("dash-ben").await;
    assert_eq!(mesh.add("dash-cat", "dash-vase", 2).await.0, 200); // 1,200.00 against a 1,000.00 balance
    let declined = mesh.checkout("dash-cat").await;
    let expected = [(&confirmed, "CONFIRMED"), (&rejected, "REJECTED"), (&declined, "PAYMENT_DECLINED")];
    for (id, status) in expected {
        assert_eq!(mesh.final_order(id).await["status"], status);
    }
    publish_raw(&mesh.topology.cart_jobs(), b"dashboard test: not an envelope").await;
    let dlq = ordermesh_bus::Topology::dead_letter_queue(&mesh.topology.cart_jobs());
    let deadline = Instant::now() + Duration::from_secs(10);
    while mesh.ready(&dlq).await == 0 {
        assert!(Instant::now() < deadline, "the poison message was not dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The API the page renders.
    let (status, page) = mesh.get("/admin/orders").await;
    assert_eq!(status, 200, "{page}");
    for (id, status) in expected {
        let row = page["orders"].as_array().unwrap().iter().find(|o| o["orderID"] == id.as_str());
        assert_eq!(row.map(|o| &o["status"]), Some(&json!(status)), "{id} in {page}");
    }
    let (_, found) = mesh.get("/admin/orders?search=dash-ben").await;
    assert_eq!(found["orders"].as_array().unwrap().len(), 1, "search by client: {found}");
    assert_eq!(found["orders"][0]["orderID"], rejected.as_str());
    let (_, found) = mesh.get(&format!("/admin/orders?search={declined}")).await;
    assert_eq!(found["orders"][0]["clientID"], "dash-cat", "search by order id: {found}");
    for bad in [
        "/admin/orders?limit=0",
        "/admin/orders?limit=-1",
        "/admin/orders?limit=1.5",
        "/admin/orders?search=%00",
        "/admin/orders?what=1",
        "/admin/overview?windowMinutes=0",
        "/admin/overview?windowMinutes=99999999999",
        "/admin/overview?stuckAfterSeconds=abc",
    ] {
        let (status, body) = mesh.get(bad).await;
        assert_eq!((status, body["status"].as_str()), (400, Some("failure")), "{bad}: {body}");
    }
    let long = "x".repeat(101);
    let (status, _) = mesh.get(&format!("/admin/orders?search={long}")).await;
    assert_eq!(status, 400, "an overlong search");

    let (status, overview) = mesh.get("/admin/overview").await;
    assert_eq!(status, 200, "{overview}");
    for (_, status) in expected {
        let count = overview["recentByStatus"].as_array().unwrap().iter().find(|c| c["key"] == status);
        assert_eq!(count.map(|c| &c["count"]), Some(&json!(1)), "{status} in {overview}");
    }
    let step = |name: &str| overview["steps"].as_array().unwrap().iter().find(|s| s["step"] == name).cloned().unwrap();
    assert_eq!(step("reserve")["ok"], 2, "{overview}");
    assert_eq!(step("reserve")["refused"], 1, "the rejection: {overview}");
    assert_eq!(step("payment")["refused"], 1, "the decline: {overview}");
    assert!(step("payment")["p99Ms"].as_f64().is_some(), "{overview}");
    assert_eq!(overview["inFlight"], json!([]), "nothing unfinished: {overview}");
    assert_eq!(overview["slowest"].as_array().unwrap().len(), 3, "{overview}");
    assert!(!overview["slowest"][0]["timeline"].as_array().unwrap().is_empty());

    let (_, dead) = mesh.get("/admin/dead-letters").await;
    let cart = dead["queues"].as_array().unwrap().iter().find(|q| q["queue"] == mesh.topology.cart_jobs()).unwrap();
    assert_eq!(cart["depth"], 1, "{dead}");
    assert!(cart["latestReasons"][0].as_str().unwrap().contains("not a valid envelope"), "{dead}");
    assert_eq!(mesh.ready(&dlq).await, 1, "looking did not take the message");
    let (_, services) = mesh.get("/admin/services").await;
    for s in services["services"].as_array().unwrap() {
        assert_eq!(s["ready"], true, "{s}");
    }

    // The page, in chromium.
    let browser = Browser::start().await;
    browser.open(&mesh.url("/dashboard")).await;
    for (id, status) in expected {
        browser
            .wait_for(
                &format!("{id} as {status}"),
                &format!(
                    "const row = document.querySelector('#orders tr[data-order-id=\"{id}\"]');
                     return !!row && row.querySelector('.status').textContent === '{status}';"
                ),
            )
            .await;
    }
    let queue = mesh.topology.cart_jobs();
    browser
        .wait_for(
            "the dead-lettered message",
            &format!(
                "const row = document.querySelector('#dead-letters tr[data-queue=\"{queue}\"]');
                 return !!row && row.querySelector('.depth').textContent === '1'
                   && row.querySelector('.reasons').textContent.includes('not a valid envelope');"
            ),
        )
        .await;
    // Every dead-letter queue's name is shown whole (wrapped if it must be), never cut off.
    let cut = browser
        .run(
            "return [...document.querySelectorAll('#dead-letters tr[data-queue] td:first-child')]
               .filter(td => td.scrollWidth > td.clientWidth).map(td => td.textContent)",
        )
        .await;
    assert_eq!(cut, json!([]), "queue names cut off on the dashboard");
    browser
        .wait_for("every service ready", "return document.querySelectorAll('#services .chip.up').length === 7")
        .await;
    let external = browser
        .run("return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin))")
        .await;
    assert_eq!(external, json!([]), "the page loads nothing from elsewhere");

    // Searching narrows the list; opening an order shows its timeline.
    browser
        .run("const s = document.getElementById('search'); s.value = 'dash-cat'; s.dispatchEvent(new Event('input')); return true;")
        .await;
    browser
        .wait_for(
            "only dash-cat's order after the search",
            &format!(
                "const rows = document.querySelectorAll('#orders tr[data-order-id]');
                 return rows.length === 1 && rows[0].dataset.orderId === '{declined}';"
            ),
        )
        .await;
    browser
        .run(&format!("document.querySelector('#orders tr[data-order-id=\"{declined}\"]').click(); return true;"))
        .await;
    browser
        .wait_for(
            "the order's timeline",
            "const d = document.getElementById('detail'); return d.classList.contains('open') && d.textContent.includes('declined');",
        )
        .await;
    browser.run("document.getElementById('detail').classList.remove('open'); const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input')); return true;").await;
    browser
        .wait_for("all orders again", "return document.querySelectorAll('#orders tr[data-order-id]').length === 3")
        .await;
    // The channel filter: these orders came without keys, so they are all `direct`.
    let filter = |channel: &str| {
        format!(
            "const c = document.getElementById('channel'); c.value = '{channel}'; c.dispatchEvent(new Event('input')); return true;"
        )
    };
    browser.run(&filter("phone")).await;
    browser
        .wait_for("no phone orders", "return document.querySelectorAll('#orders tr[data-order-id]').length === 0")
        .await;
    browser.run(&filter("direct")).await;
    browser
        .wait_for(
            "the direct orders, with their channel shown",
            "const rows = document.querySelectorAll('#orders tr[data-order-id]');
             return rows.length === 3 && [...rows].every(r => r.querySelector('.channel').textContent === 'direct');",
        )
        .await;

    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = std::env::var("DASHBOARD_SCREENSHOT")
        .unwrap_or_else(|_| concat!(env!("CARGO_TARGET_TMPDIR"), "/dashboard.png").to_owned());
    std::fs::write(&path, png).unwrap();
    browser.quit().await;
    mesh.stop().await;
}
