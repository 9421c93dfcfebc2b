//! Any JSON value as a message's payload, read as each payload type a consumer reads: it decodes or refuses,
//! never panics, and a payload that decodes encodes back to one that decodes to the same value (what a
//! service stores or forwards is what it read). The first byte picks the type; the rest is the JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordermesh_messages::payloads::*;
use serde::{Serialize, de::DeserializeOwned};

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(json: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else { return };
    // As `Envelope::payload` reads it: from the parsed value.
    if let Ok(decoded) = T::deserialize(&value) {
        let encoded = serde_json::to_value(&decoded).expect("a payload always serialises");
        let again = T::deserialize(&encoded).expect("a payload re-encodes decodably");
        assert_eq!(again, decoded);
    }
}

macro_rules! by_first_byte {
    ($data:expr, $($t:ty),+ $(,)?) => {{
        let types: &[fn(&[u8])] = &[$(round_trip::<$t>),+];
        if let Some((first, json)) = $data.split_first() {
            types[usize::from(*first) % types.len()](json);
        }
    }};
}

fuzz_target!(|data: &[u8]| {
    by_first_byte!(
        data,
        AddItem,
        ItemAdded,
        RemoveItem,
        GetCart,
        Checkout,
        CheckoutAccepted,
        CartItem,
        CartView,
        OrderLine,
        PlaceOrder,
        GetOrder,
        WhichTakenIn,
        TakenIn,
        TimelineEntry,
        OrderView,
        ChargeRequest,
        RefundRequest,
        RefundDone,
        PaymentOutcome,
        PaymentResult,
        OrderEvent,
        PutProfile,
        GetProfile,
        Profile,
    );
});
