//! The binary as an operator meets it: a bad setting stops it at once with a message naming the
//! variable, before it touches the network, and neither the broker's nor the mail server's password prints.

use std::process::Command;

fn run(env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_notifier"))
        .envs(env.iter().copied())
        .env("AMQP_URL", "amqp://guest:hunter2@127.0.0.1:1/%2f")
        .output()
        .expect("the binary runs");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_bad_setting_stops_the_binary_at_once_naming_the_variable() {
    let (ok, stderr) = run(&[("SMTP_TIMEOUT_MS", "soon")]);
    assert!(!ok, "started with SMTP_TIMEOUT_MS=soon");
    assert!(stderr.contains("SMTP_TIMEOUT_MS"), "the error does not name the variable: {stderr}");
    assert!(!stderr.contains("hunter2"), "a password was printed: {stderr}");
}

#[test]
fn a_bad_mail_server_url_or_sender_is_refused_without_printing_its_password() {
    for (key, value) in [("SMTP_URL", "gopher://mailer:s3cret@example.com"), ("SMTP_FROM", "not an address")] {
        let (ok, stderr) = run(&[(key, value)]);
        assert!(!ok, "started with {key}={value}");
        assert!(stderr.contains("SMTP_URL / SMTP_FROM"), "the error does not name the variables: {stderr}");
        assert!(!stderr.contains("s3cret") && !stderr.contains("hunter2"), "a password was printed: {stderr}");
    }
}
