//! A private single RabbitMQ node on free ports.

use std::{
    path::{Path, PathBuf},
    process::{Command as StdCommand, Stdio},
    time::Duration,
};

use super::{free_port, run, wait_for_port};

/// A RabbitMQ node of the suite's own. Started with `/usr/lib/rabbitmq/bin/rabbitmq-server` because the
/// `/usr/sbin` wrapper switches user and drops the environment that names the node and its ports.
#[derive(Debug)]
pub struct Rabbit {
    pub port: u16,
    node: String,
    dir: PathBuf,
    dist_port: u16,
}

impl Rabbit {
    pub async fn create(dir: &Path) -> Self {
        Self::create_with(dir, |port| format!("listeners.tcp.local = 127.0.0.1:{port}\n")).await
    }

    /// A node that speaks only TLS (AMQPS) on its port, with the certificate and key at `cert` and `key`
    /// (chained to `ca`); clients need no certificate of their own.
    pub async fn create_tls(dir: &Path, ca: &Path, cert: &Path, key: &Path) -> Self {
        Self::create_with(dir, |port| {
            format!(
                "listeners.tcp = none\nlisteners.ssl.local = 127.0.0.1:{port}\nssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\nssl_options.keyfile = {}\nssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                ca.display(),
                cert.display(),
                key.display()
            )
        })
        .await
    }

    async fn create_with(dir: &Path, config: impl FnOnce(u16) -> String) -> Self {
        let dir = dir.join("rabbit");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        let port = free_port();
        std::fs::write(dir.join("rabbitmq.conf"), config(port)).unwrap();
        let node = format!("omfault{}@localhost", std::process::id());
        let rabbit = Self { port, node, dir, dist_port: free_port() };
        rabbit.start().await;
        rabbit
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn env(&self, cmd: &mut StdCommand) {
        // From the suite's own directory: the caller's may be gone by teardown, and Erlang refuses to boot then.
        cmd.current_dir(&self.dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq"))
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            .env("HOME", "/root");
    }

    pub async fn start(&self) {
        let mut cmd = StdCommand::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        cmd.arg("-detached").stdout(Stdio::null()).stderr(Stdio::null());
        self.env(&mut cmd);
        run(&mut cmd, "starting the private RabbitMQ node");
        wait_for_port(self.port, Duration::from_secs(60), "the private RabbitMQ node").await;
    }

    pub fn stop(&self) {
        let mut cmd = StdCommand::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
        cmd.args(["-q", "-n", &self.node, "stop"]).stdout(Stdio::null());
        self.env(&mut cmd);
        run(&mut cmd, "stopping the private RabbitMQ node");
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        let mut cmd = StdCommand::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
        cmd.args(["-q", "-n", &self.node, "stop"]).stdout(Stdio::null()).stderr(Stdio::null());
        self.env(&mut cmd);
        if !cmd.status().is_ok_and(|s| s.success()) {
            // The node's name is only in its environment, not on its command line: kill it by the pid it wrote.
            if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
                let _ = StdCommand::new("kill").args(["-9", pid.trim()]).status();
            }
        }
    }
}
