//! A bound on one test's whole run, so that a test that hangs ends the run with its name instead of holding
//! CI until CI's own time runs out (libtest has no per-test timeout on stable).
//!
//! The bound is armed by the test's thread and disarmed when that thread ends, whether the test passed or
//! panicked: a hang anywhere, in the test's body or in its runtime's shutdown after a panic, is caught.

use std::{
    cell::RefCell,
    sync::mpsc::{self, RecvTimeoutError},
    time::Duration,
};

thread_local! {
    /// Dropped with the test's thread (or replaced by the next test on the same thread): disarms the bound.
    static ARMED: RefCell<Option<mpsc::Sender<()>>> = const { RefCell::new(None) };
}

/// Arms a bound of `limit` on the test running on this thread. When the test is still running after it,
/// the test binary prints the test's name and exits with a failure: the other tests of that binary are cut
/// short too, which is the price of not hanging.
pub fn arm(limit: Duration) {
    let name = std::thread::current().name().unwrap_or("a test").to_owned();
    let (disarm, armed) = mpsc::channel::<()>();
    ARMED.with(|slot| *slot.borrow_mut() = Some(disarm));
    std::thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = armed.recv_timeout(limit) {
            eprintln!(
                "\n{name} is still running after {limit:?}: it hangs. Stopping this test binary so that the run \
                 ends; run the test alone with TEST_LOG=1 to see the services' logs."
            );
            std::process::exit(101);
        }
    });
}
