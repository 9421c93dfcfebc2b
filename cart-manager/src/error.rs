//! The one error enum of cart-manager and its one mapping to a reply error.

use ordermesh_messages::{ErrorCode, ProductId, ReplyError};

/// Everything that can go wrong with a cart.
#[derive(Debug, thiserror::Error)]
pub enum CartError {
    /// No such product in the catalogue.
    #[error("unknown product {0}")]
    UnknownProduct(ProductId),
    /// The cart would hold more than inventory has available.
    #[error(
        "not enough stock for product {product_id}: the cart holds {in_cart}, adding {adding} would exceed the {available} available"
    )]
    NotEnoughStock {
        /// The product.
        product_id: ProductId,
        /// Units already in the cart.
        in_cart: i64,
        /// Units asked to add.
        adding: i64,
        /// Units inventory reports available.
        available: i64,
    },
    /// The cart's total at current prices does not fit in an amount of cents (an `i64`).
    #[error("the cart's total is larger than any payment can be; remove some items")]
    TotalTooLarge,
    /// Checkout of a cart with nothing in it.
    #[error("the cart is empty")]
    EmptyCart,
    /// The cart changed under every attempt of a checkout (adds racing it): nothing was checked out.
    #[error("the cart kept changing while it was being checked out; nothing was checked out, try again")]
    CartChanging,
    /// No checkout made that order.
    #[error("unknown order {0}")]
    UnknownOrder(ordermesh_messages::OrderId),
    /// Removing a product the cart does not hold.
    #[error("product {0} is not in the cart")]
    NotInCart(ProductId),
    /// The idempotency key was already used for a different request of this client.
    #[error("this Idempotency-Key was already used for a different request")]
    KeyReused,
    /// The caller's deadline passed before the request could be applied: nothing was changed.
    #[error("the request's deadline passed before it was applied")]
    Expired,
    /// inventory-manager did not answer in time.
    #[error("inventory is unavailable: {0}")]
    InventoryUnavailable(String),
    /// The database did not answer.
    #[error("the cart database is unavailable")]
    DatabaseUnavailable(#[source] sqlx::Error),
    /// Anything else: logged in full, shown opaque.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for CartError {
    fn from(err: sqlx::Error) -> Self {
        if ordermesh_db::db_unavailable(&err) {
            return Self::DatabaseUnavailable(err);
        }
        Self::Internal(anyhow::Error::new(err).context("cart database query failed"))
    }
}

impl From<&CartError> for ReplyError {
    fn from(err: &CartError) -> Self {
        let code = match err {
            CartError::UnknownProduct(_) | CartError::NotInCart(_) | CartError::UnknownOrder(_) => ErrorCode::NotFound,
            CartError::NotEnoughStock { .. }
            | CartError::EmptyCart
            | CartError::CartChanging
            | CartError::TotalTooLarge => ErrorCode::Conflict,
            CartError::KeyReused => ErrorCode::KeyReused,
            CartError::InventoryUnavailable(_) | CartError::DatabaseUnavailable(_) | CartError::Expired => {
                ErrorCode::Unavailable
            }
            CartError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                return ReplyError::new(ErrorCode::Internal, "internal error");
            }
        };
        ReplyError::new(code, err.to_string())
    }
}
