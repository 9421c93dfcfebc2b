//! The checker: reads the shoppers' history, the final state of every database, the mail the SMTP server
//! accepted, the broker's queues and `ordermesh audit`, and lists every broken promise.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use sqlx::PgPool;

use crate::{
    deployment::CATALOGUE,
    faults::FaultRecord,
    history::{Answer, Op, Request},
    schedule::{Fault, Link},
    shoppers::FINAL,
};

/// One broken promise.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    pub check: &'static str,
    pub detail: String,
}

/// What the checker read besides the history.
#[derive(Debug)]
pub struct State {
    /// order id → (client, status, step, total, channel).
    pub orders: HashMap<String, OrderRow>,
    /// order id → product → quantity.
    pub lines: HashMap<String, BTreeMap<String, i64>>,
    /// client → product → quantity left in the cart.
    pub carts: HashMap<String, BTreeMap<String, i64>>,
    /// (client, key) → order id, as cart-manager recorded its checkouts.
    pub checkouts: HashMap<(String, String), String>,
    /// product → (on hand, reserved).
    pub stock: HashMap<String, (i64, i64)>,
    /// Each accepted email: when it was first seen (ms), its Message-ID and its body.
    pub mails: Vec<(u64, String, String)>,
    /// Messages left on each work queue.
    pub queues: BTreeMap<String, u32>,
    /// `ordermesh audit`: clean or not, and its report.
    pub audit: (bool, String),
}

#[derive(Debug, Clone)]
pub struct OrderRow {
    pub client: String,
    pub status: String,
    pub step: String,
    pub channel: String,
}

impl State {
    /// Reads the databases (on the current primary) as they are now.
    pub async fn read(
        checkout: &PgPool,
        cart: &PgPool,
        inventory: &PgPool,
        mails: Vec<(u64, String, String)>,
        queues: BTreeMap<String, u32>,
        audit: (bool, String),
    ) -> anyhow::Result<Self> {
        let orders = sqlx::query_as::<_, (String, String, String, String, String)>(
            "SELECT order_id, client_id, status, step, channel FROM orders",
        )
        .fetch_all(checkout)
        .await?
        .into_iter()
        .map(|(id, client, status, step, channel)| (id, OrderRow { client, status, step, channel }))
        .collect();
        let mut lines: HashMap<String, BTreeMap<String, i64>> = HashMap::new();
        for (order, product, quantity) in
            sqlx::query_as::<_, (String, String, i64)>("SELECT order_id, product_id, quantity FROM order_lines")
                .fetch_all(checkout)
                .await?
        {
            *lines.entry(order).or_default().entry(product).or_default() += quantity;
        }
        let mut carts: HashMap<String, BTreeMap<String, i64>> = HashMap::new();
        for (client, product, quantity) in
            sqlx::query_as::<_, (String, String, i64)>("SELECT client_id, product_id, quantity FROM cart_items")
                .fetch_all(cart)
                .await?
        {
            carts.entry(client).or_default().insert(product, quantity);
        }
        let checkouts =
            sqlx::query_as::<_, (String, String, String)>("SELECT client_id, idempotency_key, order_id FROM checkouts")
                .fetch_all(cart)
                .await?
                .into_iter()
                .map(|(client, key, order)| ((client, key), order))
                .collect();
        let stock = sqlx::query_as::<_, (String, i64, i64)>("SELECT product_id, on_hand, reserved FROM stock")
            .fetch_all(inventory)
            .await?
            .into_iter()
            .map(|(product, on_hand, reserved)| (product, (on_hand, reserved)))
            .collect();
        Ok(Self { orders, lines, carts, checkouts, stock, mails, queues, audit })
    }
}

/// Every violation of the promises in `ops` against `state`, given the faults that were injected.
pub fn check(ops: &[Op], state: &State, faults: &[FaultRecord]) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut by_client: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_client.entry(op.client.as_str()).or_default().push(op);
    }
    for (client, ops) in &by_client {
        cart_effects(client, ops, state, &mut found);
        checkouts(client, ops, state, &mut found);
        reads(ops, state, &mut found);
    }
    for op in ops {
        if let Answer::Refused { status: 422, body } = &op.answer {
            found.push(violation(
                "keys",
                format!("{} {:?} with its own key refused as another request: {body}", op.client, op.request),
            ));
        }
    }
    orders_final(state, &mut found);
    stock(state, &mut found);
    emails(&by_client, state, faults, &mut found);
    for (queue, depth) in &state.queues {
        if *depth > 0 {
            found.push(violation("queues", format!("{depth} message(s) left on {queue} after the mesh settled")));
        }
    }
    if !state.audit.0 {
        for line in state.audit.1.lines().filter(|l| l.starts_with("VIOLATION")) {
            found.push(violation("audit", line.trim().to_owned()));
        }
        if !found.iter().any(|v| v.check == "audit") {
            found.push(violation("audit", format!("ordermesh audit failed: {}", state.audit.1.trim())));
        }
    }
    found
}

fn violation(check: &'static str, detail: String) -> Violation {
    Violation { check, detail }
}

/// Acknowledged adds and removals, and adds that may or may not have applied, bound what must be found of
/// each product in the client's orders plus what is left in its cart: less is a lost effect, more a doubled one.
fn cart_effects(client: &str, ops: &[&Op], state: &State, found: &mut Vec<Violation>) {
    let mut bounds: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for op in ops {
        match (&op.request, &op.answer) {
            (Request::Add { product, quantity }, Answer::Done { .. }) => {
                let b = bounds.entry(product).or_default();
                b.0 += quantity;
                b.1 += quantity;
            }
            (Request::Add { product, quantity }, Answer::GaveUp) => bounds.entry(product).or_default().1 += quantity,
            (Request::Remove { product }, Answer::Done { .. }) => {
                bounds.insert(product, (0, 0));
            }
            (Request::Remove { product }, Answer::Refused { status: 404, .. }) => {
                let b = bounds.entry(product).or_default();
                if b.0 > 0 {
                    found.push(violation(
                        "lost effect",
                        format!("{client}: a removal found no {product} after adds of {} were acknowledged", b.0),
                    ));
                }
                *b = (0, 0);
            }
            (Request::Remove { product }, Answer::GaveUp) => bounds.entry(product).or_default().0 = 0,
            _ => {}
        }
    }
    let orders: Vec<&String> = state.orders.iter().filter(|(_, o)| o.client == client).map(|(id, _)| id).collect();
    let mut seen: BTreeMap<&str, i64> = BTreeMap::new();
    for id in &orders {
        for (product, quantity) in state.lines.get(*id).into_iter().flatten() {
            *seen.entry(product).or_default() += quantity;
        }
    }
    for (product, quantity) in state.carts.get(client).into_iter().flatten() {
        *seen.entry(product).or_default() += quantity;
    }
    let products: HashSet<&str> = bounds.keys().chain(seen.keys()).copied().collect();
    for product in products {
        let (lo, hi) = bounds.get(product).copied().unwrap_or_default();
        let got = seen.get(product).copied().unwrap_or_default();
        if got < lo {
            found.push(violation(
                "lost effect",
                format!("{client}: {lo} of {product} acknowledged, {got} in its orders and cart"),
            ));
        } else if got > hi {
            found.push(violation(
                "doubled effect",
                format!("{client}: at most {hi} of {product} sent, {got} in its orders and cart"),
            ));
        }
    }
}

/// Each accepted checkout's order exists, for its client and channel, under its key; no order appears that
/// no checkout could have made; a retried key made one order.
fn checkouts(client: &str, ops: &[&Op], state: &State, found: &mut Vec<Violation>) {
    let mut acknowledged = HashSet::new();
    let mut unsure = 0usize;
    for op in ops.iter().filter(|o| o.request == Request::Checkout) {
        match &op.answer {
            Answer::Done { body, .. } => {
                let Some(id) = body["orderID"].as_str() else {
                    found.push(violation("checkout", format!("{client}: a 202 without an order id: {body}")));
                    continue;
                };
                acknowledged.insert(id.to_owned());
                match state.orders.get(id) {
                    None => {
                        found.push(violation("lost effect", format!("{client}: accepted order {id} does not exist")))
                    }
                    Some(o) if o.client != client || o.channel != op.channel => found.push(violation(
                        "checkout",
                        format!(
                            "{id}: accepted for {client} on {}, stored for {} on {}",
                            op.channel, o.client, o.channel
                        ),
                    )),
                    Some(_) => {}
                }
                let key = op.key.clone().unwrap_or_default();
                // The gateway hands cart-manager a client's key as `key:<key>`.
                match state.checkouts.get(&(client.to_owned(), format!("key:{key}"))) {
                    Some(stored) if stored == id => {}
                    other => found.push(violation(
                        "doubled effect",
                        format!("{client}: key {key} answered order {id}, cart-manager recorded {other:?}"),
                    )),
                }
            }
            Answer::GaveUp => unsure += 1,
            Answer::Refused { .. } => {}
        }
    }
    let stored: Vec<&String> = state.orders.iter().filter(|(_, o)| o.client == client).map(|(id, _)| id).collect();
    let extra = stored.iter().filter(|id| !acknowledged.contains(id.as_str())).count();
    if extra > unsure {
        found.push(violation(
            "doubled effect",
            format!(
                "{client}: {} orders stored, {} checkouts accepted and {unsure} unanswered",
                stored.len(),
                acknowledged.len()
            ),
        ));
    }
}

fn rank(status: &str) -> u8 {
    match status {
        "PENDING" => 0,
        "RESERVED" => 1,
        "PAYMENT_PENDING" => 2,
        _ => 3,
    }
}

/// Reads of one order never go backwards, never show two final statuses, and agree with the stored one; an
/// accepted order is never unknown to a read.
fn reads(ops: &[&Op], state: &State, found: &mut Vec<Violation>) {
    let mut seen: HashMap<&str, Vec<(&str, u64)>> = HashMap::new();
    for op in ops {
        let Request::ReadOrder { order_id } = &op.request else { continue };
        match &op.answer {
            Answer::Done { body, .. } => {
                let status = body["status"].as_str().unwrap_or("<none>");
                seen.entry(order_id).or_default().push((status, op.ended_ms));
            }
            Answer::Refused { status, .. } => {
                found.push(violation(
                    "reads",
                    format!("accepted order {order_id} read as {status} at {} ms", op.ended_ms),
                ));
            }
            Answer::GaveUp => {}
        }
    }
    for (order, statuses) in seen {
        for pair in statuses.windows(2) {
            let ((a, _), (b, at)) = (pair[0], pair[1]);
            if rank(b) < rank(a) || (FINAL.contains(&a) && a != b) {
                found.push(violation("reads", format!("{order} read {a}, then {b} at {at} ms")));
            }
        }
        if let (Some((last, _)), Some(stored)) = (statuses.last(), state.orders.get(order))
            && FINAL.contains(last)
            && *last != stored.status
        {
            found.push(violation("reads", format!("{order} read {last}, stored {}", stored.status)));
        }
    }
}

fn orders_final(state: &State, found: &mut Vec<Violation>) {
    let open: Vec<String> = state
        .orders
        .iter()
        .filter(|(_, o)| o.step != "done" || !FINAL.contains(&o.status.as_str()))
        .map(|(id, o)| format!("{id} ({}, next {})", o.status, o.step))
        .collect();
    if !open.is_empty() {
        found.push(violation("not final", format!("{} order(s) not final: {}", open.len(), open.join(", "))));
    }
}

/// Products never put back: what was on hand at the start, less what CONFIRMED orders took, is on hand now.
/// Every product: nothing held once every order is final, nothing negative.
fn stock(state: &State, found: &mut Vec<Violation>) {
    let mut sold: HashMap<&str, i64> = HashMap::new();
    for (id, order) in &state.orders {
        if order.status == "CONFIRMED" {
            for (product, quantity) in state.lines.get(id).into_iter().flatten() {
                *sold.entry(product).or_default() += quantity;
            }
        }
    }
    for (product, _, start) in CATALOGUE {
        let Some((on_hand, reserved)) = state.stock.get(*product).copied() else {
            found.push(violation("stock", format!("{product} is gone from inventory")));
            continue;
        };
        if *product != "scarce" {
            let expected = start - sold.get(product).copied().unwrap_or_default();
            if on_hand != expected {
                found.push(violation(
                    "stock",
                    format!(
                        "{product}: {start} at the start, {} sold, so {expected} on hand, but {on_hand}",
                        start - expected
                    ),
                ));
            }
        }
        if reserved != 0 || on_hand < 0 {
            found.push(violation(
                "stock",
                format!("{product}: on hand {on_hand}, {reserved} held with every order final"),
            ));
        }
    }
}

/// The SMTP window: a duplicate email is the promise's stated exception only if the notifier could have died
/// (or stalled, or lost its database) between the server's 250 and its own record of it.
fn explains_duplicate(fault: &FaultRecord, from_ms: u64, to_ms: u64) -> bool {
    let window = fault.started_ms <= to_ms && fault.ended_ms + 1_000 >= from_ms;
    let cause = match &fault.fault {
        Fault::KillService { service, .. } | Fault::StallService { service, .. } => *service == "notifier",
        Fault::FailOverDatabase | Fault::LoseStandby | Fault::FillConnections => true,
        Fault::CutLink { link, .. } | Fault::SlowLink { link, .. } => *link == Link::Database,
        _ => false,
    };
    window && cause && fault.outcome == "ok"
}

/// One email per event of a final order (CONFIRMED, PAYMENT_DECLINED, FAILED) of a client who gave an address
/// before checking out; a second copy only within the SMTP window.
fn emails(by_client: &BTreeMap<&str, Vec<&Op>>, state: &State, faults: &[FaultRecord], found: &mut Vec<Violation>) {
    let mut copies: HashMap<&str, Vec<u64>> = HashMap::new();
    for (at, id, _) in &state.mails {
        copies.entry(id.as_str()).or_default().push(*at);
    }
    for (id, times) in &copies {
        if times.len() > 1 {
            let (first, last) = (times[0], times[times.len() - 1]);
            if !faults.iter().any(|f| explains_duplicate(f, first.saturating_sub(30_000), last)) {
                found.push(violation(
                    "emails",
                    format!("{id} emailed {} times with no fault in its window", times.len()),
                ));
            }
        }
    }
    // Each order id mentioned in a mail, found once (the notifier writes "Order: <id>" on a line of its own), so
    // that every order is looked up instead of searched for in every body.
    let mentioned: HashSet<&str> = state.mails.iter().flat_map(|(_, _, body)| body.split_whitespace()).collect();
    for (client, ops) in by_client {
        let Some(addressed) = ops
            .iter()
            .find(|o| matches!(o.request, Request::SetEmail { .. }) && o.done().is_some())
            .map(|o| o.ended_ms)
        else {
            continue;
        };
        for op in ops.iter().filter(|o| o.request == Request::Checkout && o.started_ms > addressed) {
            let Some(id) = op.done().and_then(|b| b["orderID"].as_str()) else { continue };
            let Some(order) = state.orders.get(id) else { continue };
            if ["CONFIRMED", "PAYMENT_DECLINED", "FAILED"].contains(&order.status.as_str()) && !mentioned.contains(id) {
                found.push(violation("emails", format!("{id} of {client} is {} but was never emailed", order.status)));
            }
        }
    }
}

#[cfg(test)]
mod tests;
