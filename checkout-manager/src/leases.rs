//! The orders a saga driver is working on: what its heartbeat renews, and for how long.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// The orders a driver is working on, at the version it holds and since when its step runs: what its
/// heartbeat renews.
#[derive(Debug, Default)]
pub struct Leases(std::sync::Mutex<HashMap<String, (i64, Instant)>>);

impl Leases {
    /// Marks an order as this driver's at `version`, its step starting now, so the heartbeat renews its lease.
    pub fn hold(&self, order_id: &str, version: i64) {
        self.0.lock().expect("leases lock").insert(order_id.to_owned(), (version, Instant::now()));
    }

    /// Keeps the order's entry until the returned guard is dropped, however the step that holds it ends.
    pub(crate) fn holding(&self, order_id: &str) -> Holding<'_> {
        Holding { leases: self, order_id: order_id.to_owned() }
    }

    fn release(&self, order_id: &str) {
        self.0.lock().expect("leases lock").remove(order_id);
    }

    /// A copy of the orders whose step has run for less than `bound` (no lock is held while the database is
    /// asked). A step past its bound is hung: its lease is left to run out, so another driver takes the order
    /// up, rather than renewed for as long as the hang lasts.
    pub fn snapshot(&self, bound: Duration) -> Vec<(String, i64)> {
        let held = self.0.lock().expect("leases lock");
        held.iter().filter(|(_, (_, since))| since.elapsed() < bound).map(|(id, (v, _))| (id.clone(), *v)).collect()
    }
}

/// Releases an order's lease entry however `advance` ends.
pub(crate) struct Holding<'a> {
    leases: &'a Leases,
    order_id: String,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.leases.release(&self.order_id);
    }
}
