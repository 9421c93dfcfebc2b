//! The JSON bodies of the shop's routes: what a request may carry and what an answer holds.

use super::*;

/// `POST /addToCart` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddToCartRequest {
    /// The shopper, 1–100 characters.
    #[serde(rename = "clientID")]
    #[schema(value_type = String, min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$", example = "alice")]
    pub client_id: ClientId,
    /// The product, 1–100 characters.
    #[serde(rename = "productID")]
    #[schema(value_type = String, min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$", example = "mug")]
    pub product_id: ProductId,
    /// Units to add: an integer from 1 to 10000.
    #[schema(value_type = i64, minimum = 1, maximum = 10000, example = 2)]
    pub quantity: Quantity,
}

/// `POST /checkOutCart` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckOutCartRequest {
    /// The shopper, 1–100 characters.
    #[serde(rename = "clientID")]
    #[schema(value_type = String, min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$", example = "alice")]
    pub client_id: ClientId,
}

/// Answer to an accepted checkout.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutBody {
    /// `accepted`.
    #[schema(example = "accepted")]
    pub status: String,
    /// Empty.
    pub error: String,
    /// The new order; poll `GET /orders/{orderID}`.
    #[serde(rename = "orderID")]
    pub order_id: String,
}

/// One line of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItem {
    /// The product.
    #[serde(rename = "productID")]
    pub product_id: String,
    /// Units.
    pub quantity: i64,
    /// Unit price at checkout, in cents.
    #[serde(rename = "unitPriceCents")]
    pub unit_price_cents: i64,
}

impl From<OrderLine> for OrderItem {
    fn from(l: OrderLine) -> Self {
        Self { product_id: l.product_id.to_string(), quantity: l.quantity, unit_price_cents: l.unit_price_cents }
    }
}

/// One saga step.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineItem {
    /// `created`, `reserve`, `payment`, `commit`, `roll_back`, `refund`.
    pub step: String,
    /// `ok`, `rejected`, `declined`, `retry`, `failed`, `requested`.
    pub outcome: String,
    /// Why, for a person.
    pub detail: String,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// An order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderBody {
    /// The order.
    #[serde(rename = "orderID")]
    pub order_id: String,
    /// The buyer.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// `PENDING`, `RESERVED`, `PAYMENT_PENDING`, then final `CONFIRMED`, `REJECTED`, `PAYMENT_DECLINED` or `FAILED`.
    #[schema(example = "CONFIRMED")]
    pub status: String,
    /// What was ordered.
    pub items: Vec<OrderItem>,
    /// Amount charged, in cents.
    #[serde(rename = "totalCents")]
    pub total_cents: i64,
    /// When the order was created.
    #[serde(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    #[serde(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
    /// Every saga step, oldest first.
    pub timeline: Vec<TimelineItem>,
    /// Where the order came from: the channel of the API key that placed it (`web`, `phone`, `sales-desk`, ...),
    /// or `direct` when the gateway admits callers without keys.
    #[schema(example = "web")]
    pub channel: String,
}

impl From<OrderView> for OrderBody {
    fn from(o: OrderView) -> Self {
        Self {
            order_id: o.order_id.to_string(),
            client_id: o.client_id.to_string(),
            status: o.status,
            items: o.lines.into_iter().map(OrderItem::from).collect(),
            total_cents: o.total_cents,
            created_at: o.created_at,
            updated_at: o.updated_at,
            timeline: o
                .timeline
                .into_iter()
                .map(|t| TimelineItem { step: t.step, outcome: t.outcome, detail: t.detail, at: t.at })
                .collect(),
            channel: o.channel.to_string(),
        }
    }
}

impl OrderBody {
    /// An order checked out but not yet taken in by the saga.
    pub(super) fn pending(o: PlaceOrder) -> Self {
        Self {
            order_id: o.order_id.to_string(),
            client_id: o.client_id.to_string(),
            status: "PENDING".into(),
            items: o.lines.into_iter().map(OrderItem::from).collect(),
            total_cents: o.total_cents,
            created_at: o.created_at,
            updated_at: o.created_at,
            timeline: Vec::new(),
            channel: o.channel.to_string(),
        }
    }
}

/// One product in a cart.
#[derive(Debug, Serialize, ToSchema)]
pub struct CartLine {
    /// The product.
    #[serde(rename = "productID")]
    pub product_id: String,
    /// Units in the cart.
    pub quantity: i64,
    /// Current unit price, in cents.
    #[serde(rename = "unitPriceCents")]
    pub unit_price_cents: i64,
}

/// A cart.
#[derive(Debug, Serialize, ToSchema)]
pub struct CartBody {
    /// The shopper.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// In product order.
    pub items: Vec<CartLine>,
    /// At current prices, in cents.
    #[serde(rename = "totalCents")]
    pub total_cents: i64,
}

impl From<CartView> for CartBody {
    fn from(c: CartView) -> Self {
        Self {
            client_id: c.client_id.to_string(),
            items: c
                .items
                .into_iter()
                .map(|i| CartLine {
                    product_id: i.product_id.to_string(),
                    quantity: i.quantity,
                    unit_price_cents: i.unit_price_cents,
                })
                .collect(),
            total_cents: c.total_cents,
        }
    }
}

/// A catalogue product.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductItem {
    /// The product.
    #[serde(rename = "productID")]
    pub product_id: String,
    /// Display name.
    pub name: String,
    /// Unit price, in cents.
    #[serde(rename = "priceCents")]
    pub price_cents: i64,
    /// Units that can be ordered now.
    pub available: i64,
}

/// The catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductsBody {
    /// In product id order.
    pub products: Vec<ProductItem>,
}

/// Readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyBody {
    /// `ready` or `unavailable`.
    pub status: String,
    /// Whether RabbitMQ is connected.
    pub rabbitmq: bool,
    /// Whether inventory answers.
    pub inventory: bool,
}

/// `PUT /clients/{clientID}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutClientRequest {
    /// Where order emails go (a plain `name@example.com`, at most 254 characters); `null` stops them.
    #[serde(deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = true, max_length = 254, pattern = "^[!#-'*+\\-./0-9:=?A-Z^-~]{1,64}@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$", example = "ada@example.com")]
    pub email: Option<Email>,
}

/// A required field whose value may be `null` (serde would otherwise take a missing one as `null`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Email>, D::Error> {
    Option::<Email>::deserialize(d)
}

/// A shopper's contact details.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientBody {
    /// The shopper.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Where order emails go; `null`: no emails.
    pub email: Option<String>,
    /// When it was last set; `null` if never.
    #[serde(rename = "updatedAt")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<Profile> for ClientBody {
    fn from(p: Profile) -> Self {
        Self { client_id: p.client_id.to_string(), email: p.email.map(String::from), updated_at: p.updated_at }
    }
}
