//! Stock operations on PostgreSQL: each is one transaction, and the database's CHECKs keep the counters honest.
//!
//! Lock order, everywhere: a reservation row first, then stock rows in product-id order. Keeping to it
//! is what makes concurrent multi-line reservations, commits, roll-backs and the sweeper deadlock-free.
//! "Product-id order" is byte order: Rust's `String` order, and `COLLATE "C"` in SQL (the database's
//! default collation would order mixed-case ids differently, and so lock in another order).
//!
//! `products` holds the catalogue's reads and writes, `reservations` the holds and their settling.

mod products;
mod reservations;

pub use products::{get_product, get_products, list_products, upsert_product};
pub use reservations::{commit, expire_due, get_reservation, next_expiry, reserve, roll_back};

use crate::error::InventoryError;

type Result<T> = std::result::Result<T, InventoryError>;
