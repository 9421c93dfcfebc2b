//! The binary as an operator meets it: a bad setting stops it at once with a message naming the
//! variable, before it touches the network, and a logged configuration never shows a password.

use std::process::Command;

#[test]
fn a_bad_setting_stops_the_binary_at_once_naming_the_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_cart-manager"))
        .env("CART_PREFETCH", "lots")
        .env("AMQP_URL", "amqp://guest:hunter2@127.0.0.1:1/%2f")
        .output()
        .expect("the binary runs");
    assert!(!output.status.success(), "started with CART_PREFETCH=lots");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CART_PREFETCH"), "the error does not name the variable: {stderr}");
    assert!(!stderr.contains("hunter2"), "a password was printed: {stderr}");
}
