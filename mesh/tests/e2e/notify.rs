//! The notifier end to end: profiles through the gateway, one email per order event to a real SMTP
//! server (lettre talking to the test's server), none without an address, none twice.

use std::time::Duration;

use ordermesh_messages::{
    ClientId, Envelope, OrderId, ProductId,
    kinds::events,
    payloads::{OrderEvent, OrderLine},
};
use ordermesh_testkit::smtp::{Mail, SmtpServer};
use serde_json::{Value, json};

use crate::helpers::{Options, TestMesh, spawn_mesh_with};

async fn put(mesh: &TestMesh, client: &str, body: Value) -> (u16, Value) {
    let response = mesh.http.put(mesh.url(&format!("/clients/{client}"))).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

fn to(mails: &[Mail], address: &str) -> Vec<Mail> {
    mails.iter().filter(|m| m.to == [address]).cloned().collect()
}

/// Waits until the notifier has recorded `order_id`'s email as `state`.
async fn recorded(mesh: &TestMesh, order_id: &str, state: &str) {
    let db = mesh.notifier_db.as_ref().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE order_id = $1 AND state = $2")
            .bind(order_id)
            .bind(state)
            .fetch_one(db)
            .await
            .unwrap();
        if n > 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no {state} notification for {order_id} after 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_validated_and_kept() {
    let smtp = SmtpServer::start().await;
    let mesh = spawn_mesh_with(Options { smtp_url: Some(smtp.url()), ..Default::default() }).await;
    let (status, body) = mesh.get("/clients/ada").await;
    assert_eq!((status, &body["email"]), (200, &Value::Null), "{body}");
    let (status, body) = put(&mesh, "ada", json!({"email": "ada@example.com"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["clientID"].as_str(), body["email"].as_str()), (Some("ada"), Some("ada@example.com")));
    assert_eq!(mesh.get("/clients/ada").await.1["email"], "ada@example.com");
    let long = format!("{}@example.com", "a".repeat(250));
    for bad in [
        json!({"email": "not-an-email"}),
        json!({"email": "ada@localhost"}),
        json!({"email": "a b@example.com"}),
        json!({"email": "<ada@example.com>"}),
        json!({"email": "ada@example.com\r\nBcc: eve@example.com"}),
        json!({"email": long}),
        json!({"email": 42}),
        json!({}),
        json!({"email": "ada@example.com", "name": "Ada"}),
    ] {
        let (status, body) = put(&mesh, "ada", bad.clone()).await;
        assert_eq!(status, 400, "{bad} was accepted: {body}");
        assert_eq!(body["status"], "failure");
    }
    assert_eq!(mesh.get("/clients/ada").await.1["email"], "ada@example.com", "a refused update changed the profile");
    let (status, body) = put(&mesh, "ada", json!({"email": null})).await;
    assert_eq!((status, &body["email"]), (200, &Value::Null), "{body}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_events_are_emailed_once_and_only_with_an_address() {
    let smtp = SmtpServer::start().await;
    let mesh = spawn_mesh_with(Options { smtp_url: Some(smtp.url()), ..Default::default() }).await;
    mesh.product("mug", 1250, 10).await;
    mesh.product("yacht", 500_000_000, 1).await;
    assert_eq!(put(&mesh, "ada", json!({"email": "ada@example.com"})).await.0, 200);

    // Confirmed: one email with the order's lines, total and status.
    assert_eq!(mesh.add("ada", "mug", 2).await.0, 200);
    let confirmed = mesh.checkout("ada").await;
    assert_eq!(mesh.final_order(&confirmed).await["status"], "CONFIRMED");
    let mails = smtp.wait_for(Duration::from_secs(20), |m| !to(m, "ada@example.com").is_empty()).await;
    let mail = to(&mails, "ada@example.com").pop().expect("the confirmation was emailed");
    assert_eq!(mail.header("Subject").as_deref(), Some(format!("Order {confirmed} confirmed").as_str()));
    let body = mail.body();
    for part in [confirmed.as_str(), "Status: CONFIRMED", "2 x mug at 12.50 = 25.00", "Total: 25.00"] {
        assert!(body.contains(part), "the email lacks {part:?}:\n{body}");
    }
    assert!(mail.from.starts_with("orders@"), "{mail:?}");

    // Declined (the simulated provider's balance is 1,000.00): the email says what to do next.
    assert_eq!(mesh.add("ada", "yacht", 1).await.0, 200);
    let declined = mesh.checkout("ada").await;
    assert_eq!(mesh.final_order(&declined).await["status"], "PAYMENT_DECLINED");
    let mails = smtp.wait_for(Duration::from_secs(20), |m| to(m, "ada@example.com").len() >= 2).await;
    let mail =
        to(&mails, "ada@example.com").into_iter().find(|m| m.body().contains(&declined)).expect("decline emailed");
    assert_eq!(mail.header("Subject").as_deref(), Some(format!("Order {declined}: payment declined").as_str()));
    assert!(mail.body().contains("What to do next"), "{}", mail.body());

    // No address: no email, and no error either.
    assert_eq!(mesh.add("bob", "mug", 1).await.0, 200);
    let unaddressed = mesh.checkout("bob").await;
    assert_eq!(mesh.final_order(&unaddressed).await["status"], "CONFIRMED");
    recorded(&mesh, &unaddressed, "skipped").await;
    assert_eq!(mesh.ready(&ordermesh_bus::Topology::dead_letter_queue(&mesh.topology.notifier_events())).await, 0);

    // The same event delivered twice more (as a relay retry would): still one email.
    let event = OrderEvent {
        order_id: OrderId::parse("replayed-order").unwrap(),
        client_id: ClientId::parse("ada").unwrap(),
        status: "CONFIRMED".into(),
        reason: String::new(),
        total_cents: 1250,
        at: chrono::Utc::now(),
        channel: Default::default(),
        lines: vec![OrderLine { product_id: ProductId::parse("mug").unwrap(), quantity: 1, unit_price_cents: 1250 }],
        created_at: None,
        timeline: Vec::new(),
    };
    let envelope = Envelope::new(events::ORDER_CONFIRMED, &event);
    for _ in 0..3 {
        crate::faults::publish_raw(&mesh.topology.notifier_events(), &envelope.to_vec()).await;
    }
    mesh.wait_until_drained(&mesh.topology.notifier_events()).await;
    recorded(&mesh, "replayed-order", "sent").await;
    let replayed =
        to(&smtp.accepted(), "ada@example.com").into_iter().filter(|m| m.body().contains("replayed-order")).count();
    assert_eq!(replayed, 1, "one event delivered three times was emailed {replayed} times");
    assert_eq!(to(&smtp.accepted(), "ada@example.com").len(), 3, "{:#?}", smtp.accepted());
    // The notifier's metrics count what it did with each event.
    // A drained queue can still have copies in hand (delivered, not yet acked): wait for their counts.
    let count = |text: &str, state: &str| -> u64 {
        let prefix = format!("notifier_emails_total{{state=\"{state}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    let counts = |text: &str| (count(text, "sent"), count(text, "skipped"), count(text, "duplicate"));
    let text = mesh.scrape_until("notifier", |text| counts(text) == (3, 1, 2)).await;
    assert_eq!(counts(&text), (3, 1, 2), "{text}");
    mesh.stop().await;
}

/// The stock SMTP server of another project, Debian's `aiosmtpd` (installed by `scripts/test`), printing what it
/// receives: the notifier's email is read back exactly as an independent server got it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_email_reaches_aiosmtpd() {
    use tokio::io::AsyncBufReadExt;

    let python = std::env::var("AIOSMTPD_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = tokio::process::Command::new(&python)
        .args(["-u", "-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Debugging"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{python} -m aiosmtpd did not start ({e}): apt-get install python3-aiosmtpd (scripts/test does)")
        });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "aiosmtpd did not listen within 15 s (is python3-aiosmtpd installed?)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut printed = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();

    let mesh =
        spawn_mesh_with(Options { smtp_url: Some(format!("smtp://127.0.0.1:{port}")), ..Default::default() }).await;
    mesh.product("mug", 1250, 10).await;
    assert_eq!(put(&mesh, "grace", json!({"email": "grace@example.com"})).await.0, 200);
    assert_eq!(mesh.add("grace", "mug", 2).await.0, 200);
    let order = mesh.checkout("grace").await;
    assert_eq!(mesh.final_order(&order).await["status"], "CONFIRMED");

    let mut message = String::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = printed.next_line().await {
            if line.contains("END MESSAGE") {
                return true;
            }
            message.push_str(&line);
            message.push('\n');
        }
        false
    })
    .await;
    assert_eq!(read, Ok(true), "aiosmtpd printed no whole message: {message}");
    for part in [
        "To: grace@example.com".to_owned(),
        format!("Subject: Order {order} confirmed"),
        "Total: 25.00".to_owned(),
        "Status: CONFIRMED".to_owned(),
    ] {
        assert!(message.contains(&part), "aiosmtpd's copy lacks {part:?}:\n{message}");
    }
    mesh.stop().await;
    let _ = server.kill().await;
}
