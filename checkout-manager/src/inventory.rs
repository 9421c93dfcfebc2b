//! Stock as the saga sees it: the `Stock` trait (so decisions can be tested with a fake), and its gRPC
//! implementation, where each call has a deadline and each failure is sorted into what the saga can
//! decide on (a business refusal, a passing outage, or a state conflict) by the typed `ErrorInfo.reason`.

use std::{future::Future, pin::Pin, time::Duration};

use ordermesh_config::SharedSettings;
use ordermesh_proto::{
    InventoryClient,
    inventory::v1::{self as pb, ErrorReason},
};
use ordermesh_telemetry::Metrics;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::orders::Line;

/// How an inventory call failed, as the saga sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryFailure {
    /// Not enough stock, or a product that does not exist: the order cannot be filled.
    #[error("{0}")]
    Refused(String),
    /// The reservation is in a state that forbids the step (expired, already settled the other way).
    #[error("{0}")]
    Conflict(String),
    /// The reservation does not exist.
    #[error("reservation not found")]
    NotFound,
    /// Inventory did not answer in time or is down: try again later.
    #[error("inventory unavailable: {0}")]
    Transient(String),
}

/// State of a reservation, as the saga needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Stock is held.
    Held,
    /// Already committed.
    Committed,
    /// Released (rolled back or expired).
    Released,
}

/// A boxed future, so the trait can be used as `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the saga asks of inventory. Every call is idempotent on the order id (the reservation id).
pub trait Stock: Send + Sync + std::fmt::Debug {
    /// Holds every line under `order_id` for `ttl`.
    fn reserve<'a>(&'a self, order_id: &'a str, lines: &'a [Line], ttl: Duration) -> BoxFuture<'a, StockResult>;
    /// Turns the hold into a sale.
    fn commit<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, StockResult>;
    /// Releases the hold.
    fn roll_back<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, StockResult>;
}

/// What a stock call comes to.
pub type StockResult = Result<Held, InventoryFailure>;

impl Stock for Inventory {
    fn reserve<'a>(&'a self, order_id: &'a str, lines: &'a [Line], ttl: Duration) -> BoxFuture<'a, StockResult> {
        Box::pin(Inventory::reserve(self, order_id, lines, ttl))
    }
    fn commit<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, StockResult> {
        Box::pin(Inventory::commit(self, order_id))
    }
    fn roll_back<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, StockResult> {
        Box::pin(Inventory::roll_back(self, order_id))
    }
}

/// inventory-manager as the saga asks it: the shared client ([`InventoryClient`]: lazy, balanced over the
/// replicas, metered, each call with its deadline), its answers sorted into what the saga decides on.
#[derive(Debug, Clone)]
pub struct Inventory {
    client: InventoryClient,
}

impl Inventory {
    /// A client of `INVENTORY_URL`, with its token and TLS settings.
    pub fn new(shared: &SharedSettings, timeout: Duration, metrics: Metrics) -> anyhow::Result<Self> {
        Ok(Self { client: InventoryClient::new(shared, timeout, metrics)? })
    }

    /// Holds every line under `order_id` for `ttl`.
    pub async fn reserve(&self, order_id: &str, lines: &[Line], ttl: Duration) -> Result<Held, InventoryFailure> {
        let message = pb::ReserveRequest {
            reservation_id: order_id.to_owned(),
            lines: lines
                .iter()
                .map(|l| pb::ReservationLine { product_id: l.product_id.to_string(), quantity: l.quantity })
                .collect(),
            ttl_seconds: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        };
        self.client.reserve(message).await.map(|r| held(&r)).map_err(classify)
    }

    /// Turns the hold into a sale.
    pub async fn commit(&self, order_id: &str) -> Result<Held, InventoryFailure> {
        self.client.commit(order_id).await.map(|r| held(&r)).map_err(classify)
    }

    /// Releases the hold.
    pub async fn roll_back(&self, order_id: &str) -> Result<Held, InventoryFailure> {
        self.client.roll_back(order_id).await.map(|r| held(&r)).map_err(classify)
    }
}

fn held(r: &pb::Reservation) -> Held {
    match r.status() {
        pb::ReservationStatus::Committed => Held::Committed,
        pb::ReservationStatus::RolledBack | pb::ReservationStatus::Expired => Held::Released,
        pb::ReservationStatus::Held | pb::ReservationStatus::Unspecified => Held::Held,
    }
}

fn classify(status: Status) -> InventoryFailure {
    let info = status.get_details_error_info();
    let reason = info.as_ref().and_then(|i| ErrorReason::from_str_name(&i.reason));
    let meta = |key: &str| info.as_ref().and_then(|i| i.metadata.get(key).cloned()).unwrap_or_else(|| "?".into());
    match reason {
        Some(ErrorReason::InsufficientStock) => InventoryFailure::Refused(format!(
            "insufficient stock for product {}: requested {}, available {}",
            meta("product_id"),
            meta("requested"),
            meta("available"),
        )),
        Some(ErrorReason::UnknownProduct) => {
            InventoryFailure::Refused(format!("unknown product {}", meta("product_id")))
        }
        Some(ErrorReason::UnknownReservation) => InventoryFailure::NotFound,
        // The hold under this order id is not the one the saga expects: it must be released, not left to expire.
        Some(ErrorReason::ReservationConflict | ErrorReason::ReservationNotHeld) => {
            InventoryFailure::Conflict(status.message().to_owned())
        }
        Some(ErrorReason::Unspecified) | None => match status.code() {
            Code::InvalidArgument => InventoryFailure::Refused(status.message().to_owned()),
            _ => InventoryFailure::Transient(format!("{:?}: {}", status.code(), status.message())),
        },
    }
}
