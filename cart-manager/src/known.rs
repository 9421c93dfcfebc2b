//! What this instance's own adds and removals last left in each shopper's cart: a guess that lets a checkout
//! price the cart without reading it first.
//!
//! The guess is never trusted. The checkout's write locks the cart's rows and compares them with what was
//! priced; on any difference it changes nothing, and the checkout reads the cart and starts over. So a wrong
//! guess (another instance changed the cart, this one never saw it whole, a restart forgot it) costs one
//! more statement, never a wrong order.

use std::collections::{HashMap, VecDeque};

use ordermesh_messages::{ClientId, ProductId};

/// Carts remembered at most; the oldest is forgotten first.
const CAPACITY: usize = 4096;

/// Lines of one remembered cart at most: a larger cart is read at checkout, so memory stays bounded however
/// many products a shopper adds.
const MAX_LINES: usize = 64;

/// Each shopper's cart as this instance last changed it.
#[derive(Debug, Default)]
pub struct KnownCarts(std::sync::Mutex<Known>);

#[derive(Debug, Default)]
struct Known {
    /// Lines in byte order of product id, the order the checkout compares them in.
    carts: HashMap<String, Vec<(String, i64)>>,
    /// Shoppers in the order they came, to forget the oldest; one forgotten already is skipped.
    arrival: VecDeque<String>,
}

impl KnownCarts {
    /// An add left `total` units of `product` in `client`'s cart.
    pub fn added(&self, client: &ClientId, product: &ProductId, total: i64) {
        let mut known = self.0.lock().expect("known carts lock");
        let known = &mut *known;
        let lines = match known.carts.get_mut(client.as_str()) {
            Some(lines) => lines,
            None => {
                known.arrival.push_back(client.as_str().to_owned());
                known.carts.entry(client.as_str().to_owned()).or_default()
            }
        };
        match lines.binary_search_by(|(p, _)| p.as_str().cmp(product.as_str())) {
            Ok(i) => lines[i].1 = total,
            Err(i) => lines.insert(i, (product.as_str().to_owned(), total)),
        }
        if lines.len() > MAX_LINES {
            known.carts.remove(client.as_str());
        }
        while known.arrival.len() > CAPACITY {
            if let Some(oldest) = known.arrival.pop_front() {
                known.carts.remove(&oldest);
            }
        }
    }

    /// A removal took `product` out of `client`'s cart.
    pub fn removed(&self, client: &ClientId, product: &ProductId) {
        if let Some(lines) = self.0.lock().expect("known carts lock").carts.get_mut(client.as_str()) {
            lines.retain(|(p, _)| p != product.as_str());
        }
    }

    /// The guess for `client`'s cart, if any; forgotten, since a checkout either empties the cart or reads it.
    pub fn take(&self, client: &ClientId) -> Option<Vec<(String, i64)>> {
        self.0.lock().expect("known carts lock").carts.remove(client.as_str()).filter(|lines| !lines.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(s: &str) -> ClientId {
        ClientId::parse(s.to_owned()).unwrap()
    }

    fn product(s: &str) -> ProductId {
        ProductId::parse(s.to_owned()).unwrap()
    }

    #[test]
    fn adds_and_removals_keep_the_lines_in_product_order_and_a_checkout_takes_them() {
        let known = KnownCarts::default();
        known.added(&client("ann"), &product("pen"), 2);
        known.added(&client("ann"), &product("ink"), 1);
        known.added(&client("ann"), &product("pen"), 5);
        known.added(&client("bob"), &product("cup"), 1);
        known.removed(&client("bob"), &product("cup"));
        assert_eq!(known.take(&client("ann")), Some(vec![("ink".to_owned(), 1), ("pen".to_owned(), 5)]));
        assert_eq!(known.take(&client("ann")), None, "taken once");
        assert_eq!(known.take(&client("bob")), None, "an emptied cart is no guess");
    }

    #[test]
    fn a_cart_with_more_lines_than_the_bound_is_forgotten() {
        let known = KnownCarts::default();
        for i in 0..=MAX_LINES {
            known.added(&client("ann"), &product(&format!("p{i:03}")), 1);
        }
        assert_eq!(known.take(&client("ann")), None);
    }

    #[test]
    fn the_oldest_cart_is_forgotten_beyond_capacity() {
        let known = KnownCarts::default();
        for i in 0..=CAPACITY {
            known.added(&client(&format!("c{i}")), &product("pen"), 1);
        }
        assert_eq!(known.take(&client("c0")), None);
        assert!(known.take(&client(&format!("c{CAPACITY}"))).is_some());
        assert!(known.0.lock().unwrap().carts.len() < CAPACITY);
    }
}
