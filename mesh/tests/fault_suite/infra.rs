//! The suite's own infrastructure, so its faults disturb nothing else on the machine: a private
//! PostgreSQL cluster and a private RabbitMQ node on free ports, and each service as a child process
//! from its own binary. Everything is torn down on drop, also when the suite fails.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command as StdCommand, Stdio},
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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

fn run(cmd: &mut StdCommand, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL cluster of the suite's own, trust auth, on a free port.
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
}

impl Postgres {
    pub fn create(dir: &Path) -> Self {
        let version = std::fs::read_dir("/etc/postgresql")
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .expect("a PostgreSQL server install (/etc/postgresql/<version>)");
        let bin = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
        let dir = dir.join("pg");
        std::fs::create_dir_all(&dir).unwrap();
        run(StdCommand::new("chown").args(["-R", "postgres"]).arg(&dir), "chown the cluster directory");
        run(
            StdCommand::new("runuser")
                .current_dir(&dir)
                .args(["-u", "postgres", "--"])
                .arg(bin.join("initdb"))
                .arg("-D")
                .arg(dir.join("data"))
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
                .stdout(Stdio::null()),
            "initdb",
        );
        let pg = Self { port: free_port(), bin, dir };
        pg.start();
        pg
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> StdCommand {
        let mut cmd = StdCommand::new("runuser");
        // From the suite's own directory: the caller's may be gone by teardown.
        cmd.current_dir(&self.dir)
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"));
        cmd.args(args).stdout(Stdio::null());
        cmd
    }

    pub fn start(&self) {
        let options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200", self.port, self.dir.display());
        let log = self.dir.join("log").display().to_string();
        run(&mut self.pg_ctl(&["-o", &options, "-l", &log, "-w", "start"]), "starting the private PostgreSQL");
    }

    /// A fast shutdown: sessions are cut, as in a database restart.
    pub fn stop(&self) {
        run(&mut self.pg_ctl(&["-m", "fast", "-w", "stop"]), "stopping the private PostgreSQL");
    }
}

impl Postgres {
    /// A streaming standby of `primary` (`pg_basebackup -R`) in `dir/<name>`, started on a free port, and the
    /// primary made to wait for it on every commit (`synchronous_standby_names = '*'`, set with ALTER SYSTEM
    /// so that it is copied to the standby and can be reset there after a promotion).
    pub fn synchronous_standby(primary: &Self, dir: &Path, name: &str) -> Self {
        primary.sql("ALTER SYSTEM SET synchronous_standby_names = '*'");
        primary.sql("SELECT pg_reload_conf()");
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        run(StdCommand::new("chown").args(["-R", "postgres"]).arg(&dir), "chown the standby's directory");
        run(
            StdCommand::new("runuser")
                .current_dir(&dir)
                .args(["-u", "postgres", "--"])
                .arg(primary.bin.join("pg_basebackup"))
                .args(["-h", "127.0.0.1", "-p", &primary.port.to_string(), "-U", "postgres", "-R", "-X", "stream"])
                .arg("-D")
                .arg(dir.join("data"))
                .stdout(Stdio::null()),
            "pg_basebackup of the standby",
        );
        let standby = Self { port: free_port(), bin: primary.bin.clone(), dir };
        standby.start();
        standby
    }

    /// Runs one statement as postgres through psql (for settings and promotion).
    pub fn sql(&self, statement: &str) -> String {
        let out = StdCommand::new("runuser")
            .current_dir(&self.dir)
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-Atc",
                statement,
            ])
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "{statement}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// SIGKILL of the postmaster: the server dies with every session, as its machine would.
    pub fn kill9(&self) {
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).expect("the postmaster's pid file");
        let pid = pid.lines().next().unwrap_or_default().trim().to_owned();
        run(StdCommand::new("kill").args(["-9", &pid]), "kill -9 of the primary");
    }

    /// Promotes this standby, then drops its own synchronous requirement (it has no standby now), as a
    /// failover manager does: otherwise every commit on it would wait for ever.
    pub fn promote(&self) {
        run(&mut self.pg_ctl(&["-w", "promote"]), "promoting the standby");
        self.sql("ALTER SYSTEM RESET synchronous_standby_names");
        self.sql("SELECT pg_reload_conf()");
    }
}

/// The stable address of the primary, as a failover manager provides it: a TCP forwarder the suite repoints
/// to the promoted standby, cutting every connection it carried.
pub struct Forwarder {
    pub port: u16,
    target: std::sync::Arc<std::sync::atomic::AtomicU16>,
    /// Bumped on each repoint: a forwarded connection ends when it sees a newer one.
    epoch: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    pub async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(target));
        let (epoch, _) = tokio::sync::watch::channel(0u64);
        let (to, epochs) = (target.clone(), epoch.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = to.load(std::sync::atomic::Ordering::SeqCst);
                let mut changed = epochs.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = changed.changed() => {}
                    }
                });
            }
        });
        Self { port, target, epoch, task }
    }

    /// Sends new connections to `port` and cuts the ones to the old target.
    pub fn repoint(&self, port: u16) {
        self.target.store(port, std::sync::atomic::Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
        self.epoch.send_modify(|e| *e += 1);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]).stderr(Stdio::null()).status();
    }
}

/// A RabbitMQ node of the suite's own. Started with `/usr/lib/rabbitmq/bin/rabbitmq-server` because the
/// `/usr/sbin` wrapper switches user and drops the environment that names the node and its ports.
pub struct Rabbit {
    pub port: u16,
    node: String,
    dir: PathBuf,
    dist_port: u16,
}

impl Rabbit {
    pub async fn create(dir: &Path) -> Self {
        let dir = dir.join("rabbit");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        let port = free_port();
        std::fs::write(dir.join("rabbitmq.conf"), format!("listeners.tcp.local = 127.0.0.1:{port}\n")).unwrap();
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

/// One service as a child process of its own binary, restartable with the same or changed settings.
pub struct Service {
    pub name: &'static str,
    binary: PathBuf,
    pub env: BTreeMap<String, String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Service {
    pub fn new(name: &'static str, binaries: &Path, env: BTreeMap<String, String>, logs: &Path) -> Self {
        let binary = binaries.join(name);
        assert!(binary.exists(), "{} is not built: run the workspace's test command (scripts/test)", binary.display());
        Self { name, binary, env, log: logs.join(format!("{name}.log")), child: None }
    }

    /// The `n`th instance of a service (from 2), logging to a file of its own.
    pub fn instance(name: &'static str, n: usize, binaries: &Path, env: BTreeMap<String, String>, logs: &Path) -> Self {
        Self { log: logs.join(format!("{name}-{n}.log")), ..Self::new(name, binaries, env, logs) }
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(&self.binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.name));
        self.child = Some(child);
    }

    /// SIGKILL: no chance to ack, flush or release anything.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, then how long it took to exit and whether it exited cleanly (None: not within `patience`).
    pub async fn terminate(&mut self, patience: Duration) -> Option<(Duration, bool)> {
        let mut child = self.child.take()?;
        let pid = child.id()?;
        let started = Instant::now();
        let _ = StdCommand::new("kill").args(["-TERM", &pid.to_string()]).status();
        match tokio::time::timeout(patience, child.wait()).await {
            Ok(Ok(status)) => Some((started.elapsed(), status.success())),
            _ => {
                let _ = child.kill().await;
                None
            }
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }
}

/// Three RabbitMQ nodes of the suite's own, clustered, each on a loopback address of its own
/// (127.0.0.2, .3, .4) for AMQP and for Erlang distribution, so that packet filters between those
/// addresses partition one node from the others while clients (from 127.0.0.1) still reach every node.
/// A private epmd, a private cookie and a short `net_ticktime` keep it apart from any other node and let
/// it notice a partition in seconds.
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
