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
    let mut stock: HashMap<String, (i64, i64)> = CATALOGUE.iter().map(|(p, _, n)| ((*p).to_owned(), (*n, 0))).collect();
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
        "  note\nVIOLATION payments: o1 is CONFIRMED for 2000 but kept charges are []\naudit: 1 violation(s)\n".into(),
    );
    let found = checks(&ops, &state);
    assert!(found.contains(&"queues") && found.contains(&"audit"), "{found:?}");
}
