//! The suite's own infrastructure, so its faults disturb nothing else on the machine: a private
//! PostgreSQL cluster (and its standby) and a private RabbitMQ node on free ports, and each service as a child
//! process from its own binary. Everything is torn down on drop, also when the suite fails. The three-node
//! broker is in `rabbit_cluster.rs`, the primary's stable address in `forwarder.rs`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command as StdCommand, Stdio},
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

/// A free TCP port on loopback (bound, then released).
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

    /// Sends `signal` (`STOP`, `CONT`) to the running process: a stall it does not know about, as a long
    /// garbage-collection pause or a frozen VM gives, while its connections and leases go stale.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            run(StdCommand::new("kill").args([format!("-{signal}"), pid.to_string()]), "signalling a service");
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }
}
