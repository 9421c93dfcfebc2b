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
mod tests {
    //! The checker against made-up histories and states: each promise's check must find its breach, and a
    //! history that keeps every promise must pass.

    use serde_json::json;

    use super::*;
    use crate::{
        faults::FaultRecord,
        history::{Answer, Op, Request},
        schedule::Fault,
    };

    fn op(client: &str, at: u64, request: Request, answer: Answer) -> Op {
        Op {
            id: at,
            shopper: 0,
            client: client.into(),
            channel: "web".into(),
            key: Some(format!("{client}-{at}")),
            request,
            concurrent: false,
            started_ms: at,
            ended_ms: at + 1,
            attempts: Vec::new(),
            answer,
        }
    }

    fn add(client: &str, at: u64, product: &str, quantity: i64, answer: Answer) -> Op {
        op(client, at, Request::Add { product: product.into(), quantity }, answer)
    }

    fn ok() -> Answer {
        Answer::Done { status: 200, body: json!({"status": "success"}) }
    }

    fn accepted(order: &str) -> Answer {
        Answer::Done { status: 202, body: json!({"orderID": order}) }
    }

    fn read(order: &str, status: &str) -> Answer {
        Answer::Done { status: 200, body: json!({"orderID": order, "status": status}) }
    }

    /// alice adds 2 p0 and 1 p1, removes p1, checks out (order o1, CONFIRMED), reads it twice; she has an
    /// address and o1 was emailed once. 2 p0 sold of the catalogue's stock.
    fn kept() -> (Vec<Op>, State) {
        let ops = vec![
            op("alice", 1, Request::SetEmail { email: "alice@example.com".into() }, ok()),
            add("alice", 10, "p0", 2, ok()),
            add("alice", 20, "p1", 1, ok()),
            op("alice", 30, Request::Remove { product: "p1".into() }, ok()),
            op("alice", 40, Request::Checkout, accepted("o1")),
            op("alice", 50, Request::ReadOrder { order_id: "o1".into() }, read("o1", "RESERVED")),
            op("alice", 60, Request::ReadOrder { order_id: "o1".into() }, read("o1", "CONFIRMED")),
        ];
        let order =
            OrderRow { client: "alice".into(), status: "CONFIRMED".into(), step: "done".into(), channel: "web".into() };
        let mut stock: HashMap<String, (i64, i64)> =
            CATALOGUE.iter().map(|(p, _, n)| ((*p).to_owned(), (*n, 0))).collect();
        stock.get_mut("p0").unwrap().0 -= 2;
        let state = State {
            orders: HashMap::from([("o1".to_owned(), order)]),
            lines: HashMap::from([("o1".to_owned(), BTreeMap::from([("p0".to_owned(), 2)]))]),
            carts: HashMap::new(),
            checkouts: HashMap::from([(("alice".to_owned(), "key:alice-40".to_owned()), "o1".to_owned())]),
            stock,
            mails: vec![(70, "<e1@ordermesh>".into(), "Your order o1 is confirmed".into())],
            queues: BTreeMap::from([("cart-manager.jobs".to_owned(), 0)]),
            audit: (true, "audit: ok\n".into()),
        };
        (ops, state)
    }

    fn checks(ops: &[Op], state: &State) -> Vec<&'static str> {
        check(ops, state, &[]).into_iter().map(|v| v.check).collect()
    }

    #[test]
    fn a_history_that_keeps_every_promise_passes() {
        let (ops, state) = kept();
        assert_eq!(check(&ops, &state, &[]).len(), 0, "{:?}", check(&ops, &state, &[]));
    }

    #[test]
    fn an_acknowledged_add_missing_or_applied_twice_is_found() {
        let (ops, mut state) = kept();
        state.lines.get_mut("o1").unwrap().insert("p0".into(), 1);
        assert!(checks(&ops, &state).contains(&"lost effect"));
        let (ops, mut state) = kept();
        state.carts.insert("alice".into(), BTreeMap::from([("p0".to_owned(), 2)]));
        assert!(checks(&ops, &state).contains(&"doubled effect"));
    }

    #[test]
    fn an_add_without_an_answer_may_or_may_not_have_applied() {
        let (mut ops, mut state) = kept();
        ops.push(add("alice", 35, "p3", 1, Answer::GaveUp));
        assert_eq!(checks(&ops, &state), Vec::<&str>::new());
        // Left in the cart (the stock check would see it in a CONFIRMED order).
        state.carts.insert("alice".into(), BTreeMap::from([("p3".to_owned(), 1)]));
        assert_eq!(checks(&ops, &state), Vec::<&str>::new());
        state.carts.insert("alice".into(), BTreeMap::from([("p3".to_owned(), 2)]));
        assert!(checks(&ops, &state).contains(&"doubled effect"));
    }

    #[test]
    fn a_checkout_with_a_second_effect_or_a_lost_order_is_found() {
        let (ops, mut state) = kept();
        let twin =
            OrderRow { client: "alice".into(), status: "CONFIRMED".into(), step: "done".into(), channel: "web".into() };
        state.orders.insert("o2".into(), twin);
        assert!(checks(&ops, &state).contains(&"doubled effect"));
        let (ops, mut state) = kept();
        state.orders.clear();
        assert!(checks(&ops, &state).contains(&"lost effect"));
    }

    #[test]
    fn an_order_not_final_or_a_status_read_backwards_is_found() {
        let (ops, mut state) = kept();
        state.orders.get_mut("o1").unwrap().step = "commit".into();
        assert!(checks(&ops, &state).contains(&"not final"));
        let (mut ops, state) = kept();
        ops.push(op("alice", 70, Request::ReadOrder { order_id: "o1".into() }, read("o1", "PAYMENT_PENDING")));
        assert!(checks(&ops, &state).contains(&"reads"));
        let (mut ops, state) = kept();
        ops[5] = op("alice", 50, Request::ReadOrder { order_id: "o1".into() }, read("o1", "REJECTED"));
        assert!(checks(&ops, &state).contains(&"reads"));
    }

    #[test]
    fn stock_not_conserved_or_held_after_the_end_is_found() {
        let (ops, mut state) = kept();
        state.stock.get_mut("p0").unwrap().0 -= 1;
        assert!(checks(&ops, &state).contains(&"stock"));
        let (ops, mut state) = kept();
        state.stock.get_mut("scarce").unwrap().1 = 2;
        assert!(checks(&ops, &state).contains(&"stock"));
    }

    #[test]
    fn an_email_twice_is_a_violation_unless_the_notifier_could_have_died_between() {
        let (ops, mut state) = kept();
        state.mails.push((5_000, "<e1@ordermesh>".into(), "Your order o1 is confirmed".into()));
        assert!(checks(&ops, &state).contains(&"emails"));
        let stall = FaultRecord {
            fault: Fault::StallService { service: "notifier", instance: 1 },
            kind: "SIGSTOP of a service instance",
            description: String::new(),
            planned_ms: 0,
            started_ms: 100,
            ended_ms: 4_000,
            outcome: "ok".into(),
        };
        assert!(check(&ops, &state, &[stall]).is_empty());
        let (ops, mut state) = kept();
        state.mails.clear();
        assert!(checks(&ops, &state).contains(&"emails"));
    }

    #[test]
    fn messages_left_on_a_queue_and_an_audit_violation_are_found() {
        let (ops, mut state) = kept();
        state.queues.insert("checkout-manager.jobs".into(), 3);
        state.audit = (
            false,
            "  note\nVIOLATION payments: o1 is CONFIRMED for 2000 but kept charges are []\naudit: 1 violation(s)\n"
                .into(),
        );
        let found = checks(&ops, &state);
        assert!(found.contains(&"queues") && found.contains(&"audit"), "{found:?}");
    }
}
