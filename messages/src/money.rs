//! Money on the wire is integer cents; `Money` is the one type that does arithmetic on it and shows it: checked,
//! so a total that does not fit is refused where it is made, never wrapped into a wrong (or negative) amount.

use std::fmt;

/// An amount in cents. Made from the wire's integers at the edge; every sum and product is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

impl Money {
    /// Nothing.
    pub const ZERO: Self = Self(0);

    /// `cents` cents.
    pub const fn cents(cents: i64) -> Self {
        Self(cents)
    }

    /// The amount in cents, as the wire and the databases carry it.
    pub const fn as_cents(self) -> i64 {
        self.0
    }

    /// The sum, or `None` when it does not fit.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    /// `quantity` units at this unit price, or `None` when it does not fit.
    pub fn times(self, quantity: i64) -> Option<Self> {
        self.0.checked_mul(quantity).map(Self)
    }

    /// The total of lines of `(quantity, unit price)`, or `None` when a line or the sum does not fit.
    pub fn total(lines: impl IntoIterator<Item = (i64, Self)>) -> Option<Self> {
        lines.into_iter().try_fold(Self::ZERO, |sum, (quantity, unit)| unit.times(quantity)?.checked_add(sum))
    }
}

/// As a person reads it: units and two decimals (`12.50`, `-0.05`), no currency sign (the shop's own).
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::Money;

    fn total_cents(lines: impl IntoIterator<Item = (i64, i64)>) -> Option<i64> {
        Money::total(lines.into_iter().map(|(q, unit)| (q, Money::cents(unit)))).map(Money::as_cents)
    }

    #[test]
    fn a_total_adds_each_line_at_its_price() {
        assert_eq!(total_cents([(2, 1250), (1, 899)]), Some(3399));
        assert_eq!(total_cents([]), Some(0));
    }

    #[test]
    fn a_total_that_does_not_fit_is_none_never_wrapped() {
        // Inventory's highest price (10^12 cents) times a cart's most units of one product (10^6) fits once,
        // not ten times.
        let line = (1_000_000, 1_000_000_000_000);
        assert_eq!(total_cents([line]), Some(1_000_000_000_000_000_000));
        assert_eq!(total_cents([line; 10]), None);
        assert_eq!(total_cents([(i64::MAX, 2)]), None);
    }

    #[test]
    fn money_reads_as_units_and_two_decimals() {
        assert_eq!(Money::cents(1250).to_string(), "12.50");
        assert_eq!(Money::cents(5).to_string(), "0.05");
        assert_eq!(Money::cents(-5).to_string(), "-0.05");
        assert_eq!(Money::cents(i64::MIN).to_string(), "-92233720368547758.08", "the extreme shows, not wraps");
    }

    #[test]
    fn money_arithmetic_is_checked() {
        assert_eq!(Money::cents(1250).times(3), Some(Money::cents(3750)));
        assert_eq!(Money::cents(i64::MAX).times(2), None);
        assert_eq!(Money::cents(i64::MAX).checked_add(Money::cents(1)), None);
        assert_eq!(Money::total([(2, Money::cents(1250)), (1, Money::cents(899))]), Some(Money::cents(3399)));
    }
}
