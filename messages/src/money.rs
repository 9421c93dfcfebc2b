//! Money on the wire is integer cents; this is the one rule for a total of priced lines: checked, so a total
//! that does not fit is refused where it is made, never wrapped into a wrong (or negative) amount.

/// The total in cents of lines of `(quantity, unit price in cents)`, or `None` when a line or the sum does not
/// fit in an `i64`.
pub fn total_cents(lines: impl IntoIterator<Item = (i64, i64)>) -> Option<i64> {
    lines.into_iter().try_fold(0i64, |sum, (quantity, unit_price_cents)| {
        quantity.checked_mul(unit_price_cents).and_then(|line| sum.checked_add(line))
    })
}

#[cfg(test)]
mod tests {
    use super::total_cents;

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
}
