//! Reads that wait for an order to be final (`waitSeconds`) are woken by the order events checkout-manager
//! already publishes, instead of asking checkout-manager again and again: each gateway binds its own
//! exclusive queue to the final `order.*` events, and a waiting read sleeps until its order's event
//! arrives (or a slow fallback poll, for an event missed while the broker was away). A final event carries
//! the whole final order, which the woken reads answer with: no second read.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use lapin::{
    options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use ordermesh_bus::{Bus, Topology};
use ordermesh_messages::{
    Envelope,
    kinds::events,
    payloads::{OrderEvent, OrderView},
};
use ordermesh_telemetry::{Metrics, metrics::ServiceLabels};
use prometheus_client::metrics::{family::Family, gauge::Gauge};
use tokio::sync::{Notify, watch};

/// The events after which an order no longer changes.
const FINAL_EVENTS: [&str; 4] =
    [events::ORDER_CONFIRMED, events::ORDER_REJECTED, events::ORDER_PAYMENT_DECLINED, events::ORDER_FAILED];

/// How long this gateway remembers an order it accepted, and how many at most.
const RECENT_FOR: Duration = Duration::from_secs(60);
const RECENT_MAX: usize = 100_000;

/// How long an accepted order counts as open at most. One not final by then waits on a retry (a payment
/// provider away) or its event was missed (a broker restart); either way counting it longer would shut the
/// door on new shoppers for nothing the saga can finish sooner.
pub const OPEN_FOR: Duration = Duration::from_secs(10);

/// Orders someone is waiting on, each with the one slot all its waiters share; and the orders this
/// gateway accepted lately, with whether their final event has been seen.
#[derive(Debug, Default)]
pub struct Waiters {
    by_order: Mutex<HashMap<String, Arc<Slot>>>,
    recent: Mutex<Recent>,
}

/// Where an order accepted here stands, as far as this gateway has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Accepted lately, no final event yet: it counts as open.
    Open,
    /// No final event after `OPEN_FOR`: still pending, no longer counted.
    Lapsed,
    /// Its final event came.
    Ended,
}

/// Orders accepted here lately; oldest first in both queues, for forgetting and for lapsing.
#[derive(Debug, Default)]
struct Recent {
    seen: HashMap<String, Seen>,
    order: VecDeque<(Instant, String)>,
    opened: VecDeque<(Instant, String)>,
    open: usize,
}

impl Recent {
    /// Forgets what is older than `RECENT_FOR` (or beyond `RECENT_MAX`) and lapses what is open longer
    /// than `OPEN_FOR`.
    fn tidy(&mut self, now: Instant) {
        while self.opened.front().is_some_and(|(at, _)| now.duration_since(*at) > OPEN_FOR) {
            let Some((_, id)) = self.opened.pop_front() else { break };
            if let Some(seen @ Seen::Open) = self.seen.get_mut(&id) {
                *seen = Seen::Lapsed;
                self.open -= 1;
            }
        }
        while self.order.front().is_some_and(|(at, _)| now.duration_since(*at) > RECENT_FOR)
            || self.order.len() >= RECENT_MAX
        {
            let Some((_, id)) = self.order.pop_front() else { break };
            if self.seen.remove(&id) == Some(Seen::Open) {
                self.open -= 1;
            }
        }
    }
}

/// What the waiters of one order share: the wake-up, and the final order its event carried.
#[derive(Debug, Default)]
struct Slot {
    notify: Notify,
    view: Mutex<Option<OrderView>>,
}

/// A registered wait; leaving it (however the read ends) forgets the order once nobody else waits on it.
#[derive(Debug)]
pub struct Waiting<'a> {
    waiters: &'a Waiters,
    order_id: String,
    slot: Arc<Slot>,
}

impl Waiting<'_> {
    /// Completes when the order's final event arrives (call `enable` on it before reading the order).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.slot.notify.notified()
    }

    /// The final order, once its event brought it.
    pub fn final_view(&self) -> Option<OrderView> {
        self.slot.view.lock().expect("slot lock").clone()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut map = self.waiters.by_order.lock().expect("waiters lock");
        // The map's and this one: nobody else is waiting.
        if map.get(&self.order_id).is_some_and(|n| Arc::strong_count(n) <= 2) {
            map.remove(&self.order_id);
        }
    }
}

impl Waiters {
    /// Registers a wait for `order_id`. Register before reading the order, then read, then await: an event
    /// that arrives between the read and the await is not missed.
    pub fn wait_for(&self, order_id: &str) -> Waiting<'_> {
        let slot = self.by_order.lock().expect("waiters lock").entry(order_id.to_owned()).or_default().clone();
        Waiting { waiters: self, order_id: order_id.to_owned(), slot }
    }

    /// This gateway accepted `order_id` (a 202): it exists, and will end with an event.
    pub fn accepted(&self, order_id: &str) {
        let now = Instant::now();
        let mut recent = self.recent.lock().expect("recent lock");
        recent.tidy(now);
        if !recent.seen.contains_key(order_id) {
            recent.seen.insert(order_id.to_owned(), Seen::Open);
            recent.order.push_back((now, order_id.to_owned()));
            recent.opened.push_back((now, order_id.to_owned()));
            recent.open += 1;
        }
    }

    /// Orders this gateway accepted in the last `OPEN_FOR` whose final event has not come yet: the work
    /// it has let into the saga and not seen finish.
    pub fn open_orders(&self) -> usize {
        let mut recent = self.recent.lock().expect("recent lock");
        recent.tidy(Instant::now());
        recent.open
    }

    /// The subscription to final events was lost (a broker node gone, a reconnect): events sent meanwhile are
    /// lost, so no open order can be counted on to end with one. Each lapses now rather than after
    /// `OPEN_FOR`, so a broker failover does not shut the door on new shoppers for seconds; they are still
    /// known as pending, and waiting reads still find their end by polling.
    pub fn events_lost(&self) {
        let mut recent = self.recent.lock().expect("recent lock");
        let Recent { seen, open, .. } = &mut *recent;
        for state in seen.values_mut().filter(|s| **s == Seen::Open) {
            *state = Seen::Lapsed;
        }
        *open = 0;
    }

    /// Whether `order_id` was accepted here lately and its final event has not been seen: a waiting read
    /// need not ask for it before the event (or the fallback poll) comes.
    pub fn known_pending(&self, order_id: &str) -> bool {
        matches!(self.recent.lock().expect("recent lock").seen.get(order_id), Some(Seen::Open | Seen::Lapsed))
    }

    /// Wakes everyone waiting on `order_id`, handing them the final order if the event carried it.
    pub fn wake(&self, order_id: &str, view: Option<OrderView>) {
        // Marked before the wake-up: a read that registered and then found it still pending is woken.
        {
            let mut recent = self.recent.lock().expect("recent lock");
            if let Some(seen) = recent.seen.get_mut(order_id) {
                let was_open = *seen == Seen::Open;
                *seen = Seen::Ended;
                if was_open {
                    recent.open -= 1;
                }
            }
        }
        let slot = self.by_order.lock().expect("waiters lock").get(order_id).cloned();
        if let Some(slot) = slot {
            if view.is_some() {
                *slot.view.lock().expect("slot lock") = view;
            }
            slot.notify.notify_waiters();
        }
    }

    /// Orders being waited on now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.by_order.lock().expect("waiters lock").len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Listens to the final order events until `stop`, waking waiters; re-binds after every reconnect.
pub async fn listen(bus: Bus, topology: Topology, waiters: Arc<Waiters>, mut stop: watch::Receiver<bool>) {
    loop {
        let Some(channel) = bus.wait_for_channel(&mut stop).await else { return };
        let subscribe = async {
            // Server-named, exclusive and auto-deleted: it lives exactly as long as this connection.
            let queue = channel
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await?;
            for event in FINAL_EVENTS {
                channel
                    .queue_bind(
                        queue.name().clone(),
                        topology.order_events().as_str().into(),
                        event.into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
            // Notifications only: a lost one costs a waiting read one fallback poll, so no acks.
            channel
                .basic_consume(
                    queue.name().clone(),
                    "".into(),
                    BasicConsumeOptions { no_ack: true, exclusive: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
        };
        let mut deliveries = match tokio::time::timeout(ordermesh_bus::connection::CHANNEL_TIMEOUT, subscribe).await {
            Ok(Ok(deliveries)) => deliveries,
            _ => {
                tracing::warn!("could not subscribe to order events; waiting reads poll meanwhile");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                delivery = deliveries.next() => match delivery {
                    Some(Ok(delivery)) => {
                        if let Ok(event) = Envelope::from_slice(&delivery.data).and_then(|e| e.payload::<OrderEvent>()) {
                            waiters.wake(event.order_id.as_str(), event.final_view());
                        }
                    }
                    _ => break,
                },
                _ = stop.changed() => {
                    let _ = channel.close(200, "gateway stopping".into()).await;
                    return;
                }
            }
        }
        waiters.events_lost();
        tracing::warn!("order events subscription ended; subscribing again (open orders no longer counted)");
    }
}

/// Registers `gateway_open_orders` in `metrics`, sampled from `waiters` at each scrape.
pub fn watch_open_orders(metrics: &Metrics, waiters: &Arc<Waiters>) {
    let gauge = Family::<ServiceLabels, Gauge>::default();
    metrics.register(
        "gateway_open_orders",
        "Orders this gateway accepted whose final event it has not seen yet, each for at most 10 s; adds wait \
         while they reach GATEWAY_MAX_OPEN_ORDERS (sampled when scraped)",
        gauge.clone(),
    );
    let (sampled, m) = (waiters.clone(), metrics.clone());
    metrics.add_sampler(move || {
        m.set(&gauge, i64::try_from(sampled.open_orders()).unwrap_or(i64::MAX));
        std::future::ready(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn final_view(order_id: &str) -> OrderView {
        let at = chrono::Utc::now();
        let entry = ordermesh_messages::payloads::TimelineEntry {
            step: "commit".into(),
            outcome: "ok".into(),
            detail: String::new(),
            at,
        };
        let event = OrderEvent {
            order_id: ordermesh_messages::OrderId::parse(order_id.to_owned()).unwrap(),
            client_id: ordermesh_messages::ClientId::parse("ada".to_owned()).unwrap(),
            status: "CONFIRMED".into(),
            reason: String::new(),
            total_cents: 100,
            at,
            channel: Default::default(),
            lines: Vec::new(),
            created_at: Some(at),
            timeline: vec![entry],
        };
        event.final_view().expect("a final event carries the order")
    }

    #[tokio::test]
    async fn a_wait_is_woken_by_its_orders_event_with_the_final_order_and_forgotten_when_it_ends() {
        let waiters = Waiters::default();
        {
            let first = waiters.wait_for("o1");
            let second = waiters.wait_for("o1");
            let woken = first.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            waiters.wake("o2", Some(final_view("o2")));
            assert_eq!(first.final_view(), None, "another order's event");
            waiters.wake("o1", Some(final_view("o1")));
            tokio::time::timeout(std::time::Duration::from_secs(1), woken).await.expect("woken by its event");
            assert_eq!(first.final_view().map(|v| v.order_id.to_string()), Some("o1".to_owned()));
            assert!(second.final_view().is_some(), "every waiter of the order gets it");
            drop(second);
            assert_eq!(waiters.len(), 1, "still waited on by the first");
        }
        assert!(waiters.is_empty(), "forgotten once nobody waits");
        // Nobody waiting: nothing is kept.
        waiters.wake("o3", Some(final_view("o3")));
        assert!(waiters.is_empty());
    }

    #[test]
    fn an_accepted_order_is_pending_until_its_final_event() {
        let waiters = Waiters::default();
        assert!(!waiters.known_pending("o1"), "not accepted here");
        waiters.accepted("o1");
        assert!(waiters.known_pending("o1"));
        waiters.wake("o1", None);
        assert!(!waiters.known_pending("o1"), "its final event was seen");
        waiters.accepted("o1");
        assert!(!waiters.known_pending("o1"), "told again: still ended");
    }

    #[test]
    fn a_lost_subscription_stops_counting_open_orders_but_keeps_them_pending() {
        let waiters = Waiters::default();
        waiters.accepted("a");
        waiters.accepted("b");
        assert_eq!(waiters.open_orders(), 2);
        waiters.events_lost();
        assert_eq!(waiters.open_orders(), 0, "their events may be lost: they no longer hold the door");
        assert!(waiters.known_pending("a") && waiters.known_pending("b"));
        waiters.wake("a", None);
        assert_eq!(waiters.open_orders(), 0, "a late event does not count a lapsed order off twice");
        waiters.accepted("c");
        assert_eq!(waiters.open_orders(), 1);
    }

    #[test]
    fn open_orders_count_what_was_accepted_and_has_not_ended() {
        let waiters = Waiters::default();
        for id in ["o1", "o2", "o3"] {
            waiters.accepted(id);
        }
        waiters.accepted("o2");
        assert_eq!(waiters.open_orders(), 3, "a repeated acceptance counts once");
        waiters.wake("o2", None);
        waiters.wake("o2", None);
        waiters.wake("elsewhere", None);
        assert_eq!(waiters.open_orders(), 2, "an ended order no longer counts, however often its event comes");
    }

    #[test]
    fn an_open_order_lapses_after_open_for_but_stays_pending() {
        let waiters = Waiters::default();
        waiters.accepted("old");
        {
            // Age the entry as if it had been accepted before `OPEN_FOR`.
            let mut recent = waiters.recent.lock().unwrap();
            let long_ago = Instant::now() - OPEN_FOR - Duration::from_secs(1);
            recent.opened[0].0 = long_ago;
            recent.order[0].0 = long_ago;
        }
        waiters.accepted("new");
        assert_eq!(waiters.open_orders(), 1, "only the new one counts");
        assert!(waiters.known_pending("old"), "a lapsed order is still pending for a waiting read");
        waiters.wake("old", None);
        assert_eq!(waiters.open_orders(), 1, "a lapsed order's event does not count it off twice");
        assert!(!waiters.known_pending("old"));
    }
}
