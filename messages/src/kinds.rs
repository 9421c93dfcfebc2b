//! Every message type name, in one place (see the crate docs for the convention).

/// Gateway → cart-manager: add units of a product to a cart. Reply: a cart.
pub const CART_ADD_ITEM: &str = "cart.add_item";
/// Gateway → cart-manager: remove a product from a cart. Reply: a cart.
pub const CART_REMOVE_ITEM: &str = "cart.remove_item";
/// Gateway → cart-manager: read a cart. Reply: a cart.
pub const CART_GET: &str = "cart.get";
/// Gateway → cart-manager: turn the cart into an order. Reply: the order id.
pub const CART_CHECKOUT: &str = "cart.checkout";
/// Gateway → cart-manager: an order as checked out, for reads before checkout-manager has it. Reply: `PlaceOrder`.
pub const CART_GET_CHECKOUT: &str = "cart.get_checkout";
/// cart-manager → checkout-manager (through the outbox): a new order to run the saga for.
pub const ORDER_PLACE: &str = "order.place";
/// Gateway → checkout-manager: read an order. Reply: the order.
pub const ORDER_GET: &str = "order.get";
/// cart-manager → checkout-manager: which of these orders have you taken in? Reply: `TakenIn`. How
/// cart-manager learns that an `order.place` arrived, and sends again one the broker lost.
pub const ORDER_TAKEN_IN: &str = "order.taken_in";
/// checkout-manager → payment provider: charge a client.
pub const PAYMENT_CHARGE: &str = "payment.charge";
/// checkout-manager → payment provider: give back a charge.
pub const PAYMENT_REFUND: &str = "payment.refund";
/// payment provider → checkout-manager: the outcome of a charge attempt.
pub const PAYMENT_RESULT: &str = "payment.result";
/// payment provider → checkout-manager: a refund is booked (or there was nothing to give back), so it
/// need not be asked for again.
pub const PAYMENT_REFUNDED: &str = "payment.refunded";
/// Gateway → notifier: set a shopper's email address. Reply: the profile.
pub const CLIENT_PUT_PROFILE: &str = "client.put_profile";
/// Gateway → notifier: read a shopper's profile. Reply: the profile.
pub const CLIENT_GET_PROFILE: &str = "client.get_profile";
/// Any reply to a request; the correlation id says to which.
pub const REPLY: &str = "reply";
/// Operators' overview of orders (the dashboard), asked of checkout-manager.
pub const ADMIN_OVERVIEW: &str = "admin.overview";
/// Operators' list of the latest orders, asked of checkout-manager.
pub const ADMIN_ORDERS: &str = "admin.orders";

/// Order events on the topic exchange; the routing key is the type.
pub mod events {
    /// The order exists and its saga starts.
    pub const ORDER_CREATED: &str = "order.created";
    /// Stock is held for every line.
    pub const ORDER_RESERVED: &str = "order.reserved";
    /// A charge was requested.
    pub const ORDER_PAYMENT_PENDING: &str = "order.payment_pending";
    /// Paid and stock committed: final.
    pub const ORDER_CONFIRMED: &str = "order.confirmed";
    /// Not enough stock: final.
    pub const ORDER_REJECTED: &str = "order.rejected";
    /// The payment was declined and the stock released: final.
    pub const ORDER_PAYMENT_DECLINED: &str = "order.payment_declined";
    /// Retries ran out and the stock was released: final.
    pub const ORDER_FAILED: &str = "order.failed";
}
