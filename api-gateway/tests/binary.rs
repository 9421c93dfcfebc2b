//! The binary as an operator meets it: a bad setting stops it at once with a message naming the
//! variable, before it touches the network, and a logged configuration never shows a password.

use std::process::Command;

#[test]
fn a_bad_setting_stops_the_binary_at_once_naming_the_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_api-gateway"))
        .env("GATEWAY_REQUEST_TIMEOUT_MS", "lots")
        .env("AMQP_URL", "amqp://guest:hunter2@127.0.0.1:1/%2f")
        .env("GATEWAY_AUTH", "off")
        .output()
        .expect("the binary runs");
    assert!(!output.status.success(), "started with GATEWAY_REQUEST_TIMEOUT_MS=lots");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("GATEWAY_REQUEST_TIMEOUT_MS"), "the error does not name the variable: {stderr}");
    assert!(!stderr.contains("hunter2"), "a password was printed: {stderr}");
}

/// Starts the binary (RabbitMQ unreachable: it keeps retrying) with `format`, returns its first log lines.
fn first_lines(format: &str) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_api-gateway"))
        .env("LOG_FORMAT", format)
        .env("RUST_LOG", "info")
        .env("GATEWAY_LISTEN_ADDR", "127.0.0.1:0")
        .env("AMQP_URL", "amqp://guest:hunter2@127.0.0.1:1/%2f")
        .env("GATEWAY_AUTH", "off")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok).take(2) {
            let _ = tx.send(line);
        }
    });
    let lines: Vec<String> = (0..2).filter_map(|_| rx.recv_timeout(std::time::Duration::from_secs(10)).ok()).collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(!lines.is_empty(), "no log line within 10 s");
    lines
}

#[test]
fn logs_are_json_lines_when_asked_and_plain_without_colour_when_piped() {
    for line in first_lines("json") {
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["level"].is_string() && value["message"].is_string() && value["timestamp"].is_string(), "{line}");
        assert!(!line.contains("hunter2"), "a password was logged: {line}");
    }
    for line in first_lines("text") {
        assert!(!line.contains('\u{1b}'), "colour codes in a piped log: {line:?}");
        assert!(line.contains("INFO") || line.contains("WARN"), "{line}");
    }
}
