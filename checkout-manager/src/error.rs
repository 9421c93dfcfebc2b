//! The one error enum of checkout-manager and its one mapping to a reply error.

use ordermesh_messages::{ErrorCode, OrderId, ReplyError};

/// What can go wrong outside the saga's own expected outcomes (which are order statuses, not errors).
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// No order with that id.
    #[error("unknown order {0}")]
    UnknownOrder(OrderId),
    /// A message that can never be handled (its reason goes to the dead-letter queue).
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// The database did not answer; the work is retried.
    #[error("the checkout database is unavailable")]
    DatabaseUnavailable(#[source] sqlx::Error),
    /// A saga step ran past its bound and was stopped; the order is taken up again once its lease runs out.
    #[error("order {order_id}'s step ran past its {bound:?} bound and was stopped")]
    StepTimedOut {
        /// The order.
        order_id: String,
        /// The bound it ran past.
        bound: std::time::Duration,
    },
    /// Anything else: logged in full, shown opaque.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for CheckoutError {
    fn from(err: sqlx::Error) -> Self {
        if ordermesh_db::db_unavailable(&err) {
            return Self::DatabaseUnavailable(err);
        }
        Self::Internal(anyhow::Error::new(err).context("checkout database query failed"))
    }
}

impl From<&CheckoutError> for ReplyError {
    fn from(err: &CheckoutError) -> Self {
        let code = match err {
            CheckoutError::UnknownOrder(_) => ErrorCode::NotFound,
            CheckoutError::InvalidMessage(_) => ErrorCode::InvalidInput,
            CheckoutError::DatabaseUnavailable(_) | CheckoutError::StepTimedOut { .. } => ErrorCode::Unavailable,
            CheckoutError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                return ReplyError::new(ErrorCode::Internal, "internal error");
            }
        };
        ReplyError::new(code, err.to_string())
    }
}
