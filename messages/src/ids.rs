//! Validated ids and quantities, shared by every service: once parsed, a value is known good.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest id any service accepts, as in the prototype's schema.
pub const MAX_ID_CHARS: usize = 100;
/// The most units one add-to-cart may ask for.
pub const MAX_QUANTITY: i64 = 10_000;

/// Why a wire value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct IdError {
    /// The field as the client named it.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// The rule of every id: 1 to [`MAX_ID_CHARS`] characters, not blank, no control characters; `field` names it
/// in the error. Services with ids of their own (inventory's reservation ids) check them by it too.
pub fn check_id(field: &'static str, raw: &str) -> Result<(), IdError> {
    let len = raw.chars().count();
    let reason = if raw.trim().is_empty() {
        "must not be empty or blank".to_owned()
    } else if len > MAX_ID_CHARS {
        format!("must be at most {MAX_ID_CHARS} characters, got {len}")
    } else if raw.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(IdError { field, reason })
}

/// A validated string newtype: `$check` decides what the wire value may be, `$field` names it in errors.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        id_type!($(#[$doc])* $name, $field, check_id);
    };
    ($(#[$doc:meta])* $name:ident, $field:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates a wire value by the type's rules.
            pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
                let raw = raw.into();
                $check($field, &raw)?;
                Ok(Self(raw))
            }

            /// The value as sent and stored.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, IdError> {
                Self::parse(raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A shopper: the owner of one cart.
    ClientId,
    "clientID"
);
id_type!(
    /// A catalogue product.
    ProductId,
    "productID"
);
id_type!(
    /// An order, made by cart-manager at checkout (a UUIDv7, so ids sort by creation).
    OrderId,
    "orderID"
);

impl OrderId {
    /// A new, time-ordered order id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

fn check_key(field: &'static str, raw: &str) -> Result<(), IdError> {
    let reason = if raw.is_empty() || raw.len() > MAX_IDEMPOTENCY_KEY_CHARS {
        format!("must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters")
    } else if !raw.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        "must be printable ASCII".to_owned()
    } else {
        return Ok(());
    };
    Err(IdError { field, reason })
}

id_type!(
    /// A client's `Idempotency-Key`: 1 to 200 printable ASCII characters, scoped per client.
    IdempotencyKey,
    "Idempotency-Key",
    check_key
);

/// The longest channel name.
pub const MAX_CHANNEL_CHARS: usize = 32;

fn check_channel(field: &'static str, raw: &str) -> Result<(), IdError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_CHANNEL_CHARS
        && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !raw.starts_with('-')
        && !raw.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(IdError {
            field,
            reason: format!(
                "must be 1 to {MAX_CHANNEL_CHARS} lowercase letters, digits or inner hyphens (web, phone, sales-desk)"
            ),
        })
    }
}

id_type!(
    /// Where an order came from (`web`, `phone`, `sales-desk`, …): the channel of the API key that placed it,
    /// or [`Channel::DIRECT`] when the gateway admits callers without keys.
    Channel,
    "channel",
    check_channel
);

impl Channel {
    /// The channel of orders placed with authentication off (and of orders older than channels).
    pub const DIRECT: &'static str = "direct";

    /// [`Channel::DIRECT`].
    pub fn direct() -> Self {
        Self(Self::DIRECT.to_owned())
    }
}

impl Default for Channel {
    fn default() -> Self {
        Self::direct()
    }
}

/// The longest email address (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

fn check_email(field: &'static str, raw: &str) -> Result<(), IdError> {
    let refuse = |reason: &str| Err(IdError { field, reason: reason.to_owned() });
    if raw.is_empty() || raw.len() > MAX_EMAIL_CHARS {
        return refuse("must be 1 to 254 characters");
    }
    // Only what a mail server would take as a plain address: no display names, comments, spaces or
    // header-breaking characters, so the value can never smuggle a header into an email.
    if raw.bytes().any(|b| {
        !b.is_ascii_graphic() || matches!(b, b'<' | b'>' | b',' | b';' | b'"' | b'(' | b')' | b'\\' | b'[' | b']')
    }) {
        return refuse("must be a plain address like name@example.com (printable ASCII, no spaces or <>,;\"()[]\\)");
    }
    let Some((local, domain)) = raw.split_once('@') else { return refuse("must contain an @") };
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return refuse("must have one @ with 1 to 64 characters before it");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return refuse("must have a domain like example.com after the @");
    }
    Ok(())
}

id_type!(
    /// A shopper's email address, validated as a plain `local@domain.tld`.
    Email,
    "email",
    check_email
);

/// Units of one product asked for in one add: an integer from 1 to [`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "i64")]
pub struct Quantity(i64);

/// Any JSON value is read, so that every wrong one (a float, a string, a huge number) gets the same
/// sentence naming the field and the allowed range, not a parser's type name.
impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an integer from 1 to {MAX_QUANTITY}")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Quantity::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Quantity::parse(i64::try_from(v).unwrap_or(i64::MAX)).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                // JSON has one number type: `2.0` is the integer 2, as JSON Schema's `integer` (and so the
                // OpenAPI document, and every client generated from it) counts it. A fraction is refused.
                #[allow(clippy::cast_possible_truncation)] // in range and whole: exact
                if v.fract() == 0.0 && (1.0..=MAX_QUANTITY as f64).contains(&v) {
                    return Ok(Quantity(v as i64));
                }
                let shown = if v.fract() == 0.0 && v.abs() < 1e16 { format!("{v:.1}") } else { v.to_string() };
                Err(E::custom(format!("quantity must be an integer from 1 to {MAX_QUANTITY}, got {shown}")))
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Quantity, E> {
                Err(E::custom(format!("quantity must be an integer from 1 to {MAX_QUANTITY}, got a string")))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Quantity, E> {
                Err(E::custom(format!("quantity must be an integer from 1 to {MAX_QUANTITY}, got a boolean")))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Quantity, E> {
                Err(E::custom(format!("quantity must be an integer from 1 to {MAX_QUANTITY}, got null")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Quantity {
    /// Validates a wire value.
    pub fn parse(raw: i64) -> Result<Self, IdError> {
        if (1..=MAX_QUANTITY).contains(&raw) {
            Ok(Self(raw))
        } else {
            let shown = if raw == i64::MAX { "a larger number".to_owned() } else { raw.to_string() };
            Err(IdError {
                field: "quantity",
                reason: format!("must be an integer from 1 to {MAX_QUANTITY}, got {shown}"),
            })
        }
    }

    /// The count.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = IdError;
    fn try_from(raw: i64) -> Result<Self, IdError> {
        Self::parse(raw)
    }
}

impl From<Quantity> for i64 {
    fn from(q: Quantity) -> i64 {
        q.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_prototype_schema() {
        assert!(ClientId::parse("alice").is_ok());
        assert!(ClientId::parse("").is_err());
        assert!(ClientId::parse("   ").is_err());
        assert!(ProductId::parse("x".repeat(100)).is_ok());
        assert_eq!(ProductId::parse("x".repeat(101)).unwrap_err().field, "productID");
        assert!(serde_json::from_str::<ClientId>("\"\"").is_err());
    }

    #[test]
    fn idempotency_keys_are_short_printable_ascii() {
        assert!(IdempotencyKey::parse("alice-1").is_ok());
        assert!(IdempotencyKey::parse("k".repeat(200)).is_ok());
        for bad in [String::new(), "k".repeat(201), "tab\there".into(), "caf\u{e9}".into()] {
            assert!(IdempotencyKey::parse(bad.clone()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn quantities_are_whole_and_bounded() {
        for (ok, units) in [("1", 1), ("10000", 10_000), ("2.0", 2), ("1e2", 100), ("10000.0", 10_000)] {
            assert_eq!(serde_json::from_str::<Quantity>(ok).map(Quantity::get).ok(), Some(units), "{ok}");
        }
        for bad in ["0", "-1", "10001", "1.5", "0.0", "10001.0", "\"3\"", "1e30", "99999999999999999999", "NaN"] {
            assert!(serde_json::from_str::<Quantity>(bad).is_err(), "{bad} accepted");
        }
        // A whole float out of range is named as the float it is, not as the integer it looks like.
        let said = |raw: &str| serde_json::from_str::<Quantity>(raw).unwrap_err().to_string();
        assert!(said("0.0").contains("got 0.0"), "{}", said("0.0"));
        assert!(said("1.5").contains("got 1.5"), "{}", said("1.5"));
        assert!(said("-3.0").contains("got -3.0"), "{}", said("-3.0"));
    }
}
