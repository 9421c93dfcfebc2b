//! The one error enum of inventory-manager and its one mapping to `tonic::Status`.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::{ProductId, ReservationId, ReservationStatus};

pub use ordermesh_proto::inventory::v1::{ERROR_DOMAIN, ErrorReason};

/// `ErrorInfo` naming `reason` (declared once, in the proto) with `metadata`; the other details are added to it.
fn info<const N: usize>(reason: ErrorReason, metadata: [(&str, String); N]) -> ErrorDetails {
    let metadata: HashMap<String, String> = metadata.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    ErrorDetails::with_error_info(reason.as_str_name(), ERROR_DOMAIN, metadata)
}

/// Everything that can go wrong in inventory-manager: expected outcomes are variants, the rest is `Internal`.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// A request field is malformed.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// The proto field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// No product with that id.
    #[error("unknown product {0}")]
    UnknownProduct(ProductId),
    /// No reservation with that id.
    #[error("unknown reservation {0}")]
    UnknownReservation(ReservationId),
    /// A line asked for more than is available.
    #[error("insufficient stock for product {product_id}: requested {requested}, available {available}")]
    InsufficientStock {
        /// The first product (in lock order) that fell short.
        product_id: ProductId,
        /// Units asked for.
        requested: i64,
        /// Units that were available.
        available: i64,
    },
    /// The reservation id is taken by a reservation with other lines.
    #[error("reservation {0} already exists with different lines")]
    ReservationConflict(ReservationId),
    /// Commit or roll back asked of a reservation whose state forbids it.
    #[error("reservation {id} is {status} and cannot be {action}")]
    ReservationNotHeld {
        /// The reservation.
        id: ReservationId,
        /// Its current state.
        status: ReservationStatus,
        /// What was asked ("committed", "rolled back").
        action: &'static str,
    },
    /// An upsert would leave fewer units on hand than are reserved.
    #[error("product {product_id}: on_hand {on_hand} is below the {reserved} units currently reserved")]
    OnHandBelowReserved {
        /// The product.
        product_id: ProductId,
        /// The on_hand asked for.
        on_hand: i64,
        /// Units held by open reservations.
        reserved: i64,
    },
    /// The call presented no live credential.
    #[error("{0}")]
    Unauthenticated(String),
    /// The call's credential may not make this call.
    #[error("{0}")]
    PermissionDenied(String),
    /// The database could not be reached in time; the caller may retry.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// A bug or an unexpected failure; logged in full, shown opaque.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl InventoryError {
    /// Shorthand for [`InventoryError::InvalidArgument`].
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument { field, message: message.into() }
    }
}

impl From<sqlx::Error> for InventoryError {
    fn from(err: sqlx::Error) -> Self {
        if ordermesh_db::db_unavailable(&err) {
            return Self::Unavailable(err);
        }
        Self::Internal(anyhow::Error::new(err).context("database query failed"))
    }
}

impl From<InventoryError> for Status {
    fn from(err: InventoryError) -> Self {
        let message = err.to_string();
        match err {
            InventoryError::InvalidArgument { field, message: why } => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request_violation(field, why),
            ),
            InventoryError::UnknownProduct(id) => {
                let mut details = info(ErrorReason::UnknownProduct, [("product_id", id.to_string())]);
                details.set_resource_info("product", id.as_str(), "", "no such product");
                Status::with_error_details(Code::NotFound, message, details)
            }
            InventoryError::UnknownReservation(id) => {
                let mut details = info(ErrorReason::UnknownReservation, [("reservation_id", id.to_string())]);
                details.set_resource_info("reservation", id.as_str(), "", "no such reservation");
                Status::with_error_details(Code::NotFound, message, details)
            }
            InventoryError::InsufficientStock { product_id, requested, available } => {
                let reason = ErrorReason::InsufficientStock;
                let mut details = info(
                    reason,
                    [
                        ("product_id", product_id.to_string()),
                        ("requested", requested.to_string()),
                        ("available", available.to_string()),
                    ],
                );
                details.add_precondition_failure_violation(
                    reason.as_str_name(),
                    format!("products/{product_id}"),
                    format!("requested {requested}, available {available}"),
                );
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            InventoryError::ReservationConflict(id) => {
                let mut details = info(ErrorReason::ReservationConflict, [("reservation_id", id.to_string())]);
                details.set_resource_info("reservation", id.as_str(), "", "id taken by other lines");
                Status::with_error_details(Code::AlreadyExists, message, details)
            }
            InventoryError::ReservationNotHeld { id, status, .. } => {
                let mut details = info(
                    ErrorReason::ReservationNotHeld,
                    [("reservation_id", id.to_string()), ("status", status.as_str().to_owned())],
                );
                details.add_precondition_failure_violation(
                    format!("RESERVATION_{}", status.as_str().to_uppercase()),
                    format!("reservations/{id}"),
                    format!("reservation is {status}"),
                );
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            InventoryError::OnHandBelowReserved { product_id, .. } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_precondition_failure_violation(
                    "ON_HAND_BELOW_RESERVED",
                    format!("products/{product_id}"),
                    "on_hand may not drop below reserved",
                ),
            ),
            InventoryError::Unauthenticated(_) => Status::unauthenticated(message),
            InventoryError::PermissionDenied(_) => Status::permission_denied(message),
            InventoryError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                Status::unavailable("inventory database unavailable, retry later")
            }
            InventoryError::Internal(source) => {
                tracing::error!(error = ?source, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
