//! The notifier killed while the SMTP server holds its answer to a message: the unanswered emails are
//! sent again after the restart, and every order event is emailed exactly once.

use std::time::{Duration, Instant};

use crate::{SETTLE_BOUND, harness::Suite, load};

/// Runs the scenario on `suite` and records its row.
pub(crate) async fn run(suite: &mut Suite) {
    let shoppers: Vec<String> = (0..5).map(|i| format!("mail-{i}")).collect();
    let http = reqwest::Client::new();
    for client in &shoppers {
        let answer = http
            .put(format!("{}/clients/{client}", suite.gateway))
            .json(&serde_json::json!({"email": format!("{client}@example.com")}))
            .send()
            .await
            .expect("gateway answers");
        assert_eq!(answer.status().as_u16(), 200, "profile of {client}");
    }
    suite.smtp.hold_answers(Duration::from_secs(3));
    let mut accepted = Vec::new();
    for client in &shoppers {
        load::add_for(&suite.gateway, client).await;
        let answer = http
            .post(format!("{}/checkOutCart", suite.gateway))
            .json(&serde_json::json!({"clientID": client}))
            .send()
            .await
            .expect("gateway answers");
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        accepted.push(body["orderID"].as_str().expect("checkout accepted").to_owned());
    }
    // Killed once at least one email is in the SMTP server's hands, unanswered.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sending = 0i64;
    while sending == 0 && Instant::now() < deadline {
        sending = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE state = 'sending'")
            .fetch_one(&suite.notifier_db)
            .await
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let in_flight = format!("{sending} email(s) being sent");
    suite.service("notifier").kill9().await;
    suite.smtp.hold_answers(Duration::ZERO);
    let before_restart = suite.smtp.accepted().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    suite.service("notifier").start();
    let back = Instant::now();
    let (mut result, mut recovery) = suite.check(&accepted, back, SETTLE_BOUND).await;
    let emailed_once = |mails: &[ordermesh_testkit::smtp::Mail]| {
        accepted.iter().all(|id| mails.iter().filter(|m| m.body().contains(id.as_str())).count() == 1)
    };
    let mails = suite.smtp.wait_for(Duration::from_secs(30), |m| emailed_once(m)).await;
    let counts: Vec<usize> =
        accepted.iter().map(|id| mails.iter().filter(|m| m.body().contains(id.as_str())).count()).collect();
    let sent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notifications WHERE state = 'sent' AND order_id = ANY($1)")
            .bind(&accepted)
            .fetch_one(&suite.notifier_db)
            .await
            .unwrap_or(0);
    if sending == 0 || counts.iter().any(|&n| n != 1) || sent != accepted.len() as i64 {
        result = "FAIL".into();
        recovery = format!(
            "emails per order {counts:?} (want one each), {sent} recorded sent, {sending} in the server's hands at the kill; {recovery}"
        );
        suite.failures.push(format!("notifier killed mid-send: {recovery}"));
    } else {
        recovery = format!(
            "{} emails accepted before the kill, all {} sent once {:.1} s after the restart",
            before_restart,
            accepted.len(),
            back.elapsed().as_secs_f64()
        );
    }
    suite.record(
        "kill -9 notifier mid-send",
        "SIGKILL while the SMTP server holds its answer to an email (3 s), restarted 1 s later",
        in_flight,
        "every order event emailed exactly once (the test's SMTP server counts); all recorded sent; audit clean",
        (result, recovery),
    );
}
