//! The gRPC client the saga uses for stock: each call has a deadline, and each failure is sorted
//! into what the saga can decide on (a business refusal, a passing outage, or a state conflict).

use std::time::Duration;

use ordermesh_proto::inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient};
use tonic::{Code, Status, transport::Channel};
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

/// inventory-manager, reached lazily so it may start after checkout-manager.
#[derive(Debug, Clone)]
pub struct Inventory {
    client: InventoryServiceClient<Channel>,
    timeout: Duration,
}

impl Inventory {
    /// A client for `url`.
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self { client: pb::lazy_client(url, timeout)?, timeout })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.set_timeout(self.timeout);
        r
    }

    /// Holds every line under `order_id` for `ttl`.
    pub async fn reserve(&self, order_id: &str, lines: &[Line], ttl: Duration) -> Result<Held, InventoryFailure> {
        let request = self.request(pb::ReserveRequest {
            reservation_id: order_id.to_owned(),
            lines: lines
                .iter()
                .map(|l| pb::ReservationLine { product_id: l.product_id.clone(), quantity: l.quantity })
                .collect(),
            ttl_seconds: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        });
        self.client.clone().reserve(request).await.map(|r| held(&r.into_inner())).map_err(classify)
    }

    /// Turns the hold into a sale.
    pub async fn commit(&self, order_id: &str) -> Result<Held, InventoryFailure> {
        let request = self.request(pb::CommitReservationRequest { reservation_id: order_id.to_owned() });
        self.client.clone().commit_reservation(request).await.map(|r| held(&r.into_inner())).map_err(classify)
    }

    /// Releases the hold.
    pub async fn roll_back(&self, order_id: &str) -> Result<Held, InventoryFailure> {
        let request = self.request(pb::RollBackReservationRequest { reservation_id: order_id.to_owned() });
        self.client.clone().roll_back_reservation(request).await.map(|r| held(&r.into_inner())).map_err(classify)
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
    match status.code() {
        Code::FailedPrecondition => match status.get_details_error_info() {
            Some(info) if info.reason == "INSUFFICIENT_STOCK" => InventoryFailure::Refused(format!(
                "insufficient stock for product {}: requested {}, available {}",
                info.metadata.get("product_id").map_or("?", String::as_str),
                info.metadata.get("requested").map_or("?", String::as_str),
                info.metadata.get("available").map_or("?", String::as_str),
            )),
            _ => InventoryFailure::Conflict(status.message().to_owned()),
        },
        Code::NotFound if status.message().starts_with("unknown reservation") => InventoryFailure::NotFound,
        Code::NotFound | Code::InvalidArgument | Code::AlreadyExists => {
            InventoryFailure::Refused(status.message().to_owned())
        }
        _ => InventoryFailure::Transient(format!("{:?}: {}", status.code(), status.message())),
    }
}
