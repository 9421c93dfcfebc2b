//! `ordermesh audit`: checks the promises across every service's database and the broker, prints each
//! violation, and fails if there is one. Safe to run against a live mesh (it only reads; dead-lettered
//! messages it looks at are handed back to their queue).
//!
//! What it checks: stock is conserved for every product (the last count minus what was committed since
//! is on hand; reserved is the sum of held reservations); every checkout made exactly one order and
//! every order came from a checkout; a CONFIRMED order was charged exactly once, for its total, and
//! holds a committed reservation of exactly its lines; any other final order holds no stock and kept no
//! money; no order waits longer than a bound, nor a refund for the provider's acknowledgement; no outbox
//! row is parked or stale; every dead-lettered message carries its reason.

use std::{collections::HashMap, fmt::Write as _, time::Duration};

use lapin::options::QueueDeclareOptions;
use ordermesh_bus::{Topology, consumer::REASON_HEADER, dead_letters};
use ordermesh_config::{DatabaseSettings, SecretUrl};
use sqlx::PgPool;

/// Where the audit looks: each service's database, and the broker with the mesh's queues.
#[derive(Debug, Clone, Copy)]
pub struct Targets<'a> {
    /// inventory-manager's database.
    pub inventory: &'a DatabaseSettings,
    /// cart-manager's database.
    pub cart: &'a DatabaseSettings,
    /// checkout-manager's database.
    pub checkout: &'a DatabaseSettings,
    /// payment-gateway's database.
    pub payment: &'a DatabaseSettings,
    /// The broker.
    pub amqp_url: &'a SecretUrl,
    /// The mesh's queue names.
    pub topology: &'a Topology,
}

/// What the audit found.
#[derive(Debug, Default)]
pub struct Report {
    /// Broken promises: each one is a line for a person.
    pub violations: Vec<String>,
    /// What it saw that is not a violation (counts, queue depths, dead letters and their reasons).
    pub notes: Vec<String>,
}

impl Report {
    fn violation(&mut self, check: &str, detail: impl std::fmt::Display) {
        self.violations.push(format!("{check}: {detail}"));
    }

    fn note(&mut self, detail: impl Into<String>) {
        self.notes.push(detail.into());
    }

    /// The report as printed.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for note in &self.notes {
            let _ = writeln!(out, "  {note}");
        }
        for v in &self.violations {
            let _ = writeln!(out, "VIOLATION {v}");
        }
        let _ = writeln!(
            out,
            "audit: {}",
            if self.violations.is_empty() {
                "ok".to_owned()
            } else {
                format!("{} violation(s)", self.violations.len())
            }
        );
        out
    }
}

/// Reads the services' databases and the broker in `targets`; orders and outbox rows older than `stuck_after`
/// that are still open are violations.
pub async fn run(targets: Targets<'_>, stuck_after: Duration) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let open = |settings: &DatabaseSettings| {
        // The audit reads whole tables: its statements may take longer than a request's.
        let settings = DatabaseSettings {
            create: false,
            max_connections: 2,
            statement_timeout: settings.statement_timeout.max(std::time::Duration::from_secs(120)),
            ..settings.clone()
        };
        async move { ordermesh_db::connect(&settings).await }
    };
    let inventory = open(targets.inventory).await?;
    let cart = open(targets.cart).await?;
    let checkout = open(targets.checkout).await?;
    let payment = open(targets.payment).await?;
    let stuck_secs = stuck_after.as_secs_f64();

    stock(&inventory, &mut report).await?;
    // Read once: both the checkout and the payment checks look at every order.
    let all_orders = load_orders(&checkout).await?;
    orders(&cart, &all_orders, &mut report).await?;
    payments(&all_orders, &payment, &mut report).await?;
    reservations(&checkout, &inventory, &mut report).await?;
    stuck(&checkout, stuck_secs, &mut report).await?;
    refunds_owed(&checkout, stuck_secs, &mut report).await?;
    for (name, pool) in [("cart-manager", &cart), ("checkout-manager", &checkout)] {
        outbox(name, pool, stuck_secs, &mut report).await?;
    }
    broker(targets, &mut report).await;
    for pool in [inventory, cart, checkout, payment] {
        pool.close().await;
    }
    Ok(report)
}

async fn stock(pool: &PgPool, report: &mut Report) -> anyhow::Result<()> {
    let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query!(
        r#"SELECT s.product_id, s.on_hand, s.reserved, s.counted_on_hand,
                  COALESCE((SELECT sum(l.quantity) FROM reservation_lines l JOIN reservations r USING (reservation_id)
                            WHERE l.product_id = s.product_id AND r.status = 'committed'
                              AND r.committed_at >= s.counted_at), 0)::bigint AS "committed!",
                  COALESCE((SELECT sum(l.quantity) FROM reservation_lines l JOIN reservations r USING (reservation_id)
                            WHERE l.product_id = s.product_id AND r.status = 'held'), 0)::bigint AS "held!"
           FROM stock s ORDER BY s.product_id"#,
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.product_id, r.on_hand, r.reserved, r.counted_on_hand, r.committed, r.held))
    .collect();
    for (product, on_hand, reserved, counted, committed, held) in &rows {
        if counted - committed != *on_hand {
            report.violation(
                "stock",
                format!(
                    "{product}: counted {counted} - committed {committed} = {} but on hand is {on_hand}",
                    counted - committed
                ),
            );
        }
        if reserved != held {
            report.violation("stock", format!("{product}: reserved {reserved} but held reservations add up to {held}"));
        }
        if *on_hand < 0 || *reserved < 0 || reserved > on_hand {
            report.violation("stock", format!("{product}: on hand {on_hand}, reserved {reserved}"));
        }
    }
    report.note(format!("stock: {} products checked", rows.len()));
    Ok(())
}

/// An order as the audit needs it.
struct OrderRow {
    client_id: String,
    status: String,
    total_cents: i64,
}

async fn load_orders(checkout: &PgPool) -> anyhow::Result<HashMap<String, OrderRow>> {
    let rows = sqlx::query!("SELECT order_id, client_id, status, total_cents FROM orders").fetch_all(checkout).await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.order_id, OrderRow { client_id: r.client_id, status: r.status, total_cents: r.total_cents }))
        .collect())
}

async fn orders(cart: &PgPool, orders: &HashMap<String, OrderRow>, report: &mut Report) -> anyhow::Result<()> {
    let checkouts: Vec<(String, String, i64)> = sqlx::query!("SELECT order_id, client_id, total_cents FROM checkouts")
        .fetch_all(cart)
        .await?
        .into_iter()
        .map(|r| (r.order_id, r.client_id, r.total_cents))
        .collect();
    let in_cart_outbox = sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM outbox WHERE parked_at IS NULL"#)
        .fetch_one(cart)
        .await?;
    let mut missing = 0;
    for (id, client, total) in &checkouts {
        match orders.get(id).map(|o| (&o.client_id, &o.total_cents)) {
            None => missing += 1,
            Some((c, t)) if c != client || t != total => {
                report
                    .violation("orders", format!("{id}: checked out by {client} for {total}, ordered by {c} for {t}"));
            }
            Some(_) => {}
        }
    }
    // A checkout whose order.place is still in cart's outbox is on its way, not lost.
    if missing > in_cart_outbox {
        report.violation(
            "orders",
            format!("{missing} checkouts have no order (only {in_cart_outbox} still in the outbox)"),
        );
    }
    let known: std::collections::HashSet<&str> = checkouts.iter().map(|c| c.0.as_str()).collect();
    for id in orders.keys().filter(|id| !known.contains(id.as_str())) {
        report.violation("orders", format!("{id}: an order no checkout made"));
    }
    report.note(format!("orders: {} checkouts, {} orders", checkouts.len(), orders.len()));
    Ok(())
}

async fn payments(orders: &HashMap<String, OrderRow>, payment: &PgPool, report: &mut Report) -> anyhow::Result<()> {
    let charges: Vec<(String, String, i64)> =
        sqlx::query!("SELECT payment_id, outcome, amount_cents FROM payment_charges")
            .fetch_all(payment)
            .await?
            .into_iter()
            .map(|r| (r.payment_id, r.outcome, r.amount_cents))
            .collect();
    let mut by_order: HashMap<&str, Vec<(&str, i64)>> = HashMap::new();
    for (id, outcome, amount) in &charges {
        by_order.entry(id.as_str()).or_default().push((outcome.as_str(), *amount));
    }
    for (id, OrderRow { status, total_cents: total, .. }) in orders {
        let kept: Vec<i64> =
            by_order.get(id.as_str()).into_iter().flatten().filter(|(o, _)| *o == "succeeded").map(|c| c.1).collect();
        match status.as_str() {
            "CONFIRMED" if kept != [*total] => {
                report.violation("payments", format!("{id} is CONFIRMED for {total} but kept charges are {kept:?}"));
            }
            "REJECTED" | "PAYMENT_DECLINED" | "FAILED" if !kept.is_empty() => {
                report.violation("payments", format!("{id} is {status} but the provider kept {kept:?}"));
            }
            _ => {}
        }
    }
    for id in by_order.keys().filter(|id| !orders.contains_key(**id)) {
        report.violation("payments", format!("charge {id} for no known order"));
    }
    report.note(format!("payments: {} charges", charges.len()));
    Ok(())
}

/// A refund asked for longer ago than the bound and still not acknowledged by the provider.
async fn refunds_owed(checkout: &PgPool, stuck_secs: f64, report: &mut Report) -> anyhow::Result<()> {
    let owed = sqlx::query!(
        "SELECT payment_id, asked FROM refunds_owed
         WHERE asked_at < now() - make_interval(secs => $1) ORDER BY asked_at",
        stuck_secs
    )
    .fetch_all(checkout)
    .await?;
    for r in owed {
        let (payment_id, asked) = (r.payment_id, r.asked);
        report.violation("refunds", format!("refund of {payment_id} asked {asked} time(s), never acknowledged"));
    }
    Ok(())
}

async fn reservations(checkout: &PgPool, inventory: &PgPool, report: &mut Report) -> anyhow::Result<()> {
    let lines: Vec<(String, String, String, i64)> = sqlx::query!(
        "SELECT o.order_id, o.status, l.product_id, l.quantity FROM orders o JOIN order_lines l USING (order_id)",
    )
    .fetch_all(checkout)
    .await?
    .into_iter()
    .map(|r| (r.order_id, r.status, r.product_id, r.quantity))
    .collect();
    let held: HashMap<(String, String), (String, i64)> = sqlx::query!(
        "SELECT r.reservation_id, l.product_id, r.status, l.quantity
         FROM reservations r JOIN reservation_lines l USING (reservation_id)",
    )
    .fetch_all(inventory)
    .await?
    .into_iter()
    .map(|r| ((r.reservation_id, r.product_id), (r.status, r.quantity)))
    .collect();
    for (order, status, product, quantity) in &lines {
        let reservation = held.get(&(order.clone(), product.clone()));
        match (status.as_str(), reservation) {
            ("CONFIRMED", Some((s, q))) if s == "committed" && q == quantity => {}
            ("CONFIRMED", other) => {
                report.violation("reservations", format!("{order} is CONFIRMED but its {product} hold is {other:?}"));
            }
            ("REJECTED" | "PAYMENT_DECLINED" | "FAILED", Some((s, _))) if s == "held" || s == "committed" => {
                report.violation("reservations", format!("{order} is {status} but its {product} hold is {s}"));
            }
            (_, Some((_, q))) if q > quantity => {
                report.violation(
                    "reservations",
                    format!("{order} holds {q} of {product}, more than the {quantity} asked"),
                );
            }
            _ => {}
        }
    }
    Ok(())
}

async fn stuck(checkout: &PgPool, stuck_secs: f64, report: &mut Report) -> anyhow::Result<()> {
    let stuck = sqlx::query!(
        r#"SELECT order_id, status, step, extract(epoch FROM now() - updated_at)::float8 AS "age!" FROM orders
           WHERE step <> 'done' AND updated_at < now() - make_interval(secs => $1) ORDER BY updated_at LIMIT 50"#,
        stuck_secs
    )
    .fetch_all(checkout)
    .await?;
    for r in stuck {
        let (id, status, step, age) = (r.order_id, r.status, r.step, r.age);
        report.violation("stuck", format!("{id} has been {status} (next step {step}) for {age:.0} s"));
    }
    let open: Vec<(String, i64)> =
        sqlx::query!(r#"SELECT status, count(*) AS "count!" FROM orders GROUP BY status ORDER BY status"#)
            .fetch_all(checkout)
            .await?
            .into_iter()
            .map(|r| (r.status, r.count))
            .collect();
    report.note(format!("orders by status: {open:?}"));
    Ok(())
}

async fn outbox(service: &str, pool: &PgPool, stuck_secs: f64, report: &mut Report) -> anyhow::Result<()> {
    let parked = sqlx::query!("SELECT id, parked_reason FROM outbox WHERE parked_at IS NOT NULL ORDER BY id LIMIT 20")
        .fetch_all(pool)
        .await?;
    for r in parked {
        report.violation("outbox", format!("{service} row {} parked: {}", r.id, r.parked_reason.unwrap_or_default()));
    }
    let stale = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM outbox
           WHERE parked_at IS NULL AND created_at < now() - make_interval(secs => $1)"#,
        stuck_secs
    )
    .fetch_one(pool)
    .await?;
    if stale > 0 {
        report.violation("outbox", format!("{service} has {stale} rows unpublished for over {stuck_secs:.0} s"));
    }
    Ok(())
}

async fn broker(targets: Targets<'_>, report: &mut Report) {
    let topology = targets.topology;
    let url = targets.amqp_url.expose();
    let conn = match ordermesh_bus::connection::connect_first(url).await {
        Ok(conn) => conn,
        Err(e) => {
            return report.violation("broker", format!("cannot connect to {}: {e}", targets.amqp_url));
        }
    };
    for queue in topology.work_queues() {
        let dlq = Topology::dead_letter_queue(&queue);
        let Ok(channel) = conn.create_channel().await else { continue };
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let depth =
            channel.queue_declare(queue.as_str().into(), passive, Default::default()).await.map(|q| q.message_count());
        report.note(format!("queue {queue}: {} ready", depth.map_or_else(|e| format!("? ({e})"), |d| d.to_string())));
        // Looked at without acking: closing the channel hands every message back to the dead-letter queue.
        let mut reasons: HashMap<String, usize> = HashMap::new();
        let Ok(look) = conn.create_channel().await else { continue };
        match dead_letters::peek(look, &dlq, usize::MAX, topology).await {
            Ok(peeked) => {
                for reason in peeked.reasons {
                    match reason {
                        Some(reason) => *reasons.entry(reason).or_default() += 1,
                        None => report.violation(
                            "dead letters",
                            format!("a message in {dlq} has no reason ({REASON_HEADER} or x-death)"),
                        ),
                    }
                }
            }
            Err(e) => report.violation("dead letters", format!("cannot read {dlq}: {e}")),
        }
        let _ = channel.close(200, "audit done".into()).await;
        for (reason, n) in reasons {
            report.note(format!("dead letter in {dlq} ({n}x): {reason}"));
        }
    }
    let _ = conn.close(200, "audit done".into()).await;
}
