//! Private infrastructure for faults that must disturb nothing else on the machine: PostgreSQL clusters
//! (`postgres`), a RabbitMQ node (`rabbit`) or a three-node cluster (`cluster`) on free ports, a fault-injecting
//! TCP proxy (`proxy`), and each service as a child process of its own binary (`service`). Everything is torn
//! down on drop, also when a run fails. The fault suite and the nemesis share it.

pub mod cluster;
pub mod postgres;
pub mod proxy;
pub mod rabbit;
pub mod service;

pub use cluster::RabbitCluster;
pub use postgres::Postgres;
pub use proxy::Forwarder;
pub use rabbit::Rabbit;
pub use service::Service;

use std::{
    collections::BTreeMap,
    path::Path,
    process::Command as StdCommand,
    time::{Duration, Instant},
};

/// A port free now on every address, below Linux's ephemeral range (32768 and up): the servers here are
/// stopped and started again on their port, and a port from that range can meanwhile be taken as the local
/// end of any outgoing connection (a killed RabbitMQ node once could not start again for that reason).
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let base = 20_000 + u16::try_from(std::process::id() % 60).unwrap_or(0) * 200;
    loop {
        let port = base + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 12_000;
        let port = if port >= 32_000 { port - 12_000 } else { port };
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

/// Stops a test that needs root (private PostgreSQL clusters run as user `postgres` through `runuser`, packet
/// filters need it), saying so, as CI runs as root.
pub fn require_root(what: &str) {
    let uid = StdCommand::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    assert_eq!(uid.as_deref().ok(), Some("0"), "{what} needs root, as CI runs");
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Waits until `port` accepts connections (or panics after `patience`).
pub async fn wait_for_port(port: u16, patience: Duration, what: &str) {
    let deadline = Instant::now() + patience;
    while !port_open(port) {
        assert!(Instant::now() < deadline, "{what} did not open port {port} within {patience:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn run(cmd: &mut StdCommand, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ordermesh audit` (the binary at `ordermesh`) with exactly the settings `env` (the services' own):
/// its report, `Ok` when it found nothing, `Err` when it found a violation or could not run.
pub async fn audit(ordermesh: &Path, env: &BTreeMap<String, String>, stuck_after: Duration) -> Result<String, String> {
    let out = tokio::process::Command::new(ordermesh)
        .args(["audit", "--stuck-after-seconds", &stuck_after.as_secs().to_string()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .await
        .map_err(|e| format!("audit did not run: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(text) } else { Err(text) }
}
