//! A private three-node RabbitMQ cluster on loopback addresses of its own, and partitions between its nodes.

use std::{
    path::{Path, PathBuf},
    process::{Command as StdCommand, Stdio},
    time::{Duration, Instant},
};

use super::{free_port, run};

/// Three RabbitMQ nodes of the suite's own, clustered, each on a loopback address of its own
/// (127.0.0.2, .3, .4) for AMQP and for Erlang distribution, so that packet filters between those
/// addresses partition one node from the others while clients (from 127.0.0.1) still reach every node.
/// A private epmd, a private cookie and a short `net_ticktime` keep it apart from any other node and let
/// it notice a partition in seconds.
#[derive(Debug)]
pub struct RabbitCluster {
    pub ports: [u16; 3],
    dist_ports: [u16; 3],
    epmd_port: u16,
    dir: PathBuf,
    /// The nftables table the partitions are made in (named per suite, removed on drop).
    table: String,
}

/// Seconds after which a silent peer node counts as gone (Erlang's `net_ticktime`).
pub const NET_TICKTIME: u64 = 4;

impl RabbitCluster {
    pub fn address(i: usize) -> String {
        format!("127.0.0.{}", i + 2)
    }

    fn node(i: usize) -> String {
        format!("n{}@{}", i + 1, Self::address(i))
    }

    pub async fn create(dir: &Path) -> Self {
        let dir = dir.join("rabbit-cluster");
        std::fs::create_dir_all(&dir).unwrap();
        let cookie = dir.join(".erlang.cookie");
        std::fs::write(&cookie, format!("ordermesh-fault-suite-{}", std::process::id())).unwrap();
        run(StdCommand::new("chmod").arg("400").arg(&cookie), "chmod the cookie");
        let cluster = Self {
            ports: [free_port(), free_port(), free_port()],
            dist_ports: [free_port(), free_port(), free_port()],
            epmd_port: free_port(),
            dir,
            table: format!("omfault{}", std::process::id()),
        };
        let addresses: Vec<String> = std::iter::once("127.0.0.1".to_owned()).chain((0..3).map(Self::address)).collect();
        run(
            StdCommand::new("epmd").args([
                "-daemon",
                "-port",
                &cluster.epmd_port.to_string(),
                "-address",
                &addresses.join(","),
            ]),
            "starting the cluster's own epmd",
        );
        for i in 0..3 {
            let node_dir = cluster.dir.join(format!("n{}", i + 1));
            std::fs::create_dir_all(&node_dir).unwrap();
            std::fs::write(node_dir.join("enabled_plugins"), "[].\n").unwrap();
            std::fs::write(
                node_dir.join("rabbitmq.conf"),
                format!(
                    "listeners.tcp.local = {ip}:{port}\ndistribution.listener.interface = {ip}\nloopback_users = none\ncluster_partition_handling = pause_minority\n",
                    ip = Self::address(i),
                    port = cluster.ports[i]
                ),
            )
            .unwrap();
            cluster.start_node(i);
        }
        for i in 0..3 {
            cluster.await_node(i).await;
        }
        for i in 1..3 {
            cluster.ctl(i, &["stop_app"]);
            cluster.ctl(i, &["join_cluster", &Self::node(0)]);
            cluster.ctl(i, &["start_app"]);
        }
        cluster
    }

    /// Every node, as `AMQP_URL` lists them.
    pub fn url(&self) -> String {
        let first = format!("amqp://guest:guest@{}:{}/%2f", Self::address(0), self.ports[0]);
        std::iter::once(first)
            .chain((1..3).map(|i| format!("{}:{}", Self::address(i), self.ports[i])))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn env(&self, i: usize, cmd: &mut StdCommand) {
        let node_dir = self.dir.join(format!("n{}", i + 1));
        let ip = Self::address(i).replace('.', ",");
        cmd.current_dir(&node_dir)
            .env("HOME", &self.dir)
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("RABBITMQ_USE_LONGNAME", "true")
            .env("RABBITMQ_NODENAME", Self::node(i))
            .env("RABBITMQ_DIST_PORT", self.dist_ports[i].to_string())
            .env("RABBITMQ_MNESIA_BASE", node_dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", node_dir.join("log"))
            .env("RABBITMQ_PID_FILE", node_dir.join("pid"))
            .env("RABBITMQ_CONFIG_FILE", node_dir.join("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", node_dir.join("enabled_plugins"))
            // Outgoing distribution from the node's own address, so that filters by address cut it.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                format!("-kernel inet_dist_connect_options [{{ip,{{{ip}}}}}] -kernel net_ticktime {NET_TICKTIME}"),
            );
    }

    /// `rabbitmqctl` against node `i`: its output, or what went wrong.
    fn try_ctl(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let mut cmd = StdCommand::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
        cmd.args(["-q", "--longnames", "-n", &Self::node(i)]).args(args);
        self.env(i, &mut cmd);
        let out = cmd.output().map_err(|e| format!("rabbitmqctl {args:?}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "rabbitmqctl {args:?} on node {} failed: {}{}",
                i + 1,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn ctl(&self, i: usize, args: &[&str]) -> String {
        self.try_ctl(i, args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn start_node(&self, i: usize) {
        let mut cmd = StdCommand::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        cmd.arg("-detached").stdout(Stdio::null()).stderr(Stdio::null());
        self.env(i, &mut cmd);
        run(&mut cmd, "starting a cluster node");
    }

    /// Starts node `i` again and waits until it runs (rejoined).
    pub async fn start(&self, i: usize) {
        self.start_node(i);
        self.await_node(i).await;
    }

    async fn await_node(&self, i: usize) {
        // await_startup fails at once while the node has not registered with epmd yet, hence the loop.
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = self.try_ctl(i, &["await_startup", "--timeout", "5"]) {
            assert!(Instant::now() < deadline, "node {} did not start within 60 s: {e}", i + 1);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `rabbitmqctl stop`: the node leaves cleanly.
    pub fn stop(&self, i: usize) {
        self.ctl(i, &["stop"]);
    }

    /// SIGKILL of node `i`'s Erlang VM.
    pub fn kill9(&self, i: usize) {
        let pid = std::fs::read_to_string(self.dir.join(format!("n{}/pid", i + 1))).expect("the node's pid file");
        run(StdCommand::new("kill").args(["-9", pid.trim()]), "kill -9 of a cluster node");
    }

    /// The index of the node leading `queue` (a quorum queue), asked of node `ask` (None if it cannot say).
    /// `rabbitmq-queues quorum_status` asks the queue's members only; `list_queues` would wait a minute for
    /// any node that is down.
    pub fn leader(&self, ask: usize, queue: &str) -> Option<usize> {
        let mut cmd = StdCommand::new("/usr/lib/rabbitmq/bin/rabbitmq-queues");
        cmd.args(["-q", "--longnames", "-n", &Self::node(ask), "quorum_status", queue, "--formatter", "json"]);
        self.env(ask, &mut cmd);
        let out = cmd.output().ok().filter(|o| o.status.success())?;
        let members: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
        let leader = members.iter().find(|m| m["Raft State"] == "leader")?["Node Name"].as_str()?.to_owned();
        (0..3).find(|&i| leader == Self::node(i))
    }

    /// Drops every packet between node `i` and the other two (clients still reach all three).
    pub fn partition(&self, i: usize) {
        let others: Vec<String> = (0..3).filter(|&j| j != i).map(Self::address).collect();
        let others = others.join(", ");
        let me = Self::address(i);
        let rules = format!(
            "table inet {t} {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  ip saddr {me} ip daddr {{ {others} }} drop\n  ip saddr {{ {others} }} ip daddr {me} drop\n }}\n}}\n",
            t = self.table
        );
        let file = self.dir.join("partition.nft");
        std::fs::write(&file, rules).unwrap();
        run(StdCommand::new("nft").arg("-f").arg(&file), "nft: partitioning a node");
    }

    /// Whether node `i` takes AMQP connections (a node paused by `pause_minority` closes its listener).
    pub async fn accepts_clients(&self, i: usize) -> bool {
        let addr = format!("{}:{}", Self::address(i), self.ports[i]);
        let connect = tokio::net::TcpStream::connect(addr);
        matches!(tokio::time::timeout(Duration::from_millis(500), connect).await, Ok(Ok(_)))
    }

    /// Removes the partition.
    pub fn heal(&self) {
        // Nothing to delete when no partition is in place.
        let _ = StdCommand::new("nft").args(["delete", "table", "inet", &self.table]).stderr(Stdio::null()).status();
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        self.heal();
        for i in 0..3 {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join(format!("n{}/pid", i + 1))) {
                let _ = StdCommand::new("kill").args(["-9", pid.trim()]).status();
            }
        }
        let _ = StdCommand::new("pkill").args(["-f", &format!("epmd -daemon -port {}", self.epmd_port)]).status();
    }
}
