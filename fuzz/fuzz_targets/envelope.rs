//! Any bytes as a message from the broker: the envelope and its head decode or refuse, never panic, and an
//! envelope that decodes encodes back to bytes that decode to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordermesh_messages::{Envelope, EnvelopeHead};

fuzz_target!(|data: &[u8]| {
    let head = EnvelopeHead::from_slice(data);
    match Envelope::from_slice(data) {
        Ok(envelope) => {
            // The head is read from the same bytes by the outbox relay: it must accept what the consumer does.
            let head = head.expect("bytes the envelope accepts, its head accepts");
            assert_eq!(head.message_id, envelope.message_id);
            assert_eq!(head.kind, envelope.kind);
            let again = Envelope::from_slice(&envelope.to_vec()).expect("an envelope re-encodes decodably");
            assert_eq!(again, envelope);
        }
        Err(reason) => assert!(!reason.is_empty(), "a refusal says why"),
    }
});
