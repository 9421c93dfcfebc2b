//! Inventory's domain types: wire data is parsed into these at the edge, so the store never sees an invalid value.

use std::fmt;

use chrono::{DateTime, Utc};

use ordermesh_messages::ids::check_id;

use crate::error::InventoryError;

/// The most units one reservation line may ask for: far above any real basket, far below overflow.
pub const MAX_LINE_QUANTITY: i64 = 1_000_000;
/// The most units a product may have on hand; keeps sums of counters far from `i64` overflow.
pub const MAX_ON_HAND: i64 = 1_000_000_000_000;
/// The highest unit price accepted (ten billion currency units), a guard against typos and overflow.
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000_000;
/// The most lines one reservation may carry; a bound on work done under row locks.
pub const MAX_LINES: usize = 100;

/// A product's catalogue id: the one type every service uses (`ordermesh_messages`), by the same rules.
pub use ordermesh_messages::ProductId;

/// Parses a product id from the wire by the rules every service applies (1 to 100 characters, not blank, no
/// control characters), its error naming the gRPC field.
pub fn product_id(raw: impl Into<String>) -> Result<ProductId, InventoryError> {
    ProductId::parse(raw).map_err(|e| InventoryError::invalid("product_id", e.reason))
}

/// A reservation's id, chosen by the caller (checkout uses the order id) so retries are idempotent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReservationId(String);

impl ReservationId {
    /// Validates a wire value by the rules of every id (`ordermesh_messages::ids::check_id`).
    pub fn parse(raw: impl Into<String>) -> Result<Self, InventoryError> {
        let raw = raw.into();
        check_id("reservation_id", &raw).map_err(|e| InventoryError::invalid(e.field, e.reason))?;
        Ok(Self(raw))
    }

    /// The id as stored and sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A product's display name, 1 to 200 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    /// Validates a wire value.
    pub fn parse(raw: String) -> Result<Self, InventoryError> {
        let len = raw.chars().count();
        if raw.trim().is_empty() {
            return Err(InventoryError::invalid("name", "must not be blank"));
        }
        if len > 200 {
            return Err(InventoryError::invalid("name", format!("must be at most 200 characters, got {len}")));
        }
        Ok(Self(raw))
    }

    /// The name as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A unit price in integer cents: money is never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceCents(i64);

impl PriceCents {
    /// Validates a wire value: 0 to [`MAX_PRICE_CENTS`].
    pub fn parse(raw: i64) -> Result<Self, InventoryError> {
        if !(0..=MAX_PRICE_CENTS).contains(&raw) {
            return Err(InventoryError::invalid(
                "price_cents",
                format!("must be between 0 and {MAX_PRICE_CENTS}, got {raw}"),
            ));
        }
        Ok(Self(raw))
    }

    /// The price in cents.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Units physically in stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnHand(i64);

impl OnHand {
    /// Validates a wire value: 0 to [`MAX_ON_HAND`].
    pub fn parse(raw: i64) -> Result<Self, InventoryError> {
        if !(0..=MAX_ON_HAND).contains(&raw) {
            return Err(InventoryError::invalid("on_hand", format!("must be between 0 and {MAX_ON_HAND}, got {raw}")));
        }
        Ok(Self(raw))
    }

    /// The count.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Units asked for on one reservation line: 1 to [`MAX_LINE_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i64);

impl Quantity {
    /// Validates a wire value.
    pub fn parse(raw: i64) -> Result<Self, InventoryError> {
        if !(1..=MAX_LINE_QUANTITY).contains(&raw) {
            return Err(InventoryError::invalid(
                "quantity",
                format!("must be between 1 and {MAX_LINE_QUANTITY}, got {raw}"),
            ));
        }
        Ok(Self(raw))
    }

    /// The count.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// One product and how many units of it a reservation holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The product held.
    pub product_id: ProductId,
    /// How many units.
    pub quantity: Quantity,
}

/// A reservation's lines: never empty, each product once, sorted by product id.
///
/// The order is the lock order: every transaction touching several stock rows takes them in this
/// order, so two reservations over the same products can never deadlock each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines(Vec<Line>);

impl Lines {
    /// Checks the whole set of lines and sorts it.
    pub fn parse(mut lines: Vec<Line>) -> Result<Self, InventoryError> {
        if lines.is_empty() {
            return Err(InventoryError::invalid("lines", "must hold at least one line"));
        }
        if lines.len() > MAX_LINES {
            return Err(InventoryError::invalid(
                "lines",
                format!("must hold at most {MAX_LINES} lines, got {}", lines.len()),
            ));
        }
        lines.sort_by(|a, b| a.product_id.cmp(&b.product_id));
        if let Some(pair) = lines.windows(2).find(|w| w[0].product_id == w[1].product_id) {
            return Err(InventoryError::invalid(
                "lines",
                format!("product {} appears more than once; merge its quantities into one line", pair[0].product_id),
            ));
        }
        Ok(Self(lines))
    }

    /// Wraps lines read back from the database, which were validated when written.
    pub(crate) fn from_stored(lines: Vec<Line>) -> Self {
        Self(lines)
    }

    /// The lines, in lock order.
    pub fn iter(&self) -> impl Iterator<Item = &Line> {
        self.0.iter()
    }

    /// Product ids and quantities as parallel arrays, the shape `UNNEST` takes.
    pub(crate) fn columns(&self) -> (Vec<String>, Vec<i64>) {
        self.0.iter().map(|l| (l.product_id.as_str().to_owned(), l.quantity.get())).unzip()
    }
}

/// A product with its catalogue data and stock counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// Catalogue id.
    pub product_id: String,
    /// Display name.
    pub name: String,
    /// Unit price.
    pub price_cents: i64,
    /// Units physically in stock, including reserved ones.
    pub on_hand: i64,
    /// Units held by open reservations.
    pub reserved: i64,
    /// `on_hand - reserved`, computed by the database.
    pub available: i64,
}

/// Where a reservation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    /// Stock is held and may be committed or rolled back.
    Held,
    /// The hold became a sale.
    Committed,
    /// The hold was released on request.
    RolledBack,
    /// The hold was released because its time ran out.
    Expired,
}

impl ReservationStatus {
    /// The value stored in `reservations.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Committed => "committed",
            Self::RolledBack => "rolled_back",
            Self::Expired => "expired",
        }
    }

    pub(crate) fn from_db(raw: &str) -> Result<Self, InventoryError> {
        Ok(match raw {
            "held" => Self::Held,
            "committed" => Self::Committed,
            "rolled_back" => Self::RolledBack,
            "expired" => Self::Expired,
            other => {
                return Err(InventoryError::Internal(anyhow::anyhow!(
                    "unknown reservation status {other:?} in database"
                )));
            }
        })
    }
}

impl fmt::Display for ReservationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reservation with its lines, state and audit timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The caller's id.
    pub reservation_id: ReservationId,
    /// Current state.
    pub status: ReservationStatus,
    /// What is (or was) held.
    pub lines: Lines,
    /// When the hold was taken.
    pub created_at: DateTime<Utc>,
    /// When a held reservation stops being committable.
    pub expires_at: DateTime<Utc>,
    /// When it was committed, if it was.
    pub committed_at: Option<DateTime<Utc>>,
    /// When it was rolled back, if it was.
    pub rolled_back_at: Option<DateTime<Utc>>,
    /// When it expired, if it did.
    pub expired_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(p: &str, q: i64) -> Line {
        Line { product_id: ProductId::parse(p).unwrap(), quantity: Quantity::parse(q).unwrap() }
    }

    #[test]
    fn ids_are_one_to_a_hundred_characters() {
        assert!(ProductId::parse("").is_err());
        assert!(ProductId::parse("   ").is_err(), "a blank id, which the gateway refuses");
        assert!(ReservationId::parse(" \t").is_err());
        assert!(ProductId::parse("a").is_ok());
        assert!(ProductId::parse("é".repeat(100)).is_ok());
        assert!(ProductId::parse("a".repeat(101)).is_err());
        assert!(ProductId::parse("a\nb").is_err());
    }

    #[test]
    fn quantities_are_bounded() {
        for bad in [i64::MIN, -1, 0, MAX_LINE_QUANTITY + 1, i64::MAX] {
            assert!(Quantity::parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(Quantity::parse(1).unwrap().get(), 1);
        assert_eq!(Quantity::parse(MAX_LINE_QUANTITY).unwrap().get(), MAX_LINE_QUANTITY);
    }

    #[test]
    fn lines_are_sorted_and_unique() {
        let lines = Lines::parse(vec![line("b", 1), line("a", 2)]).unwrap();
        let ids: Vec<_> = lines.iter().map(|l| l.product_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(Lines::parse(vec![line("a", 1), line("b", 1), line("a", 3)]).is_err());
        assert!(Lines::parse(vec![]).is_err());
    }

    #[test]
    fn money_and_counts_reject_negatives() {
        assert!(PriceCents::parse(-1).is_err());
        assert!(OnHand::parse(-1).is_err());
        assert!(ProductName::parse("  ".into()).is_err());
    }
}
