//! The fault suite's harness: the suite's private PostgreSQL and RabbitMQ, the six services as child
//! processes, the stream of shoppers, and the checks every scenario ends with.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use ordermesh_bus::Topology;
use ordermesh_nemesis::infra::{Forwarder, Postgres, Rabbit, RabbitCluster, Service, free_port, wait_for_port};
use ordermesh_testkit::smtp::SmtpServer;
use sqlx::PgPool;

use crate::{
    SETTLE_BOUND,
    load::{self, Load},
    table::{self, Row},
};

/// How a scenario disrupts one service's process.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Disruption {
    /// SIGKILL, restarted after 2 s.
    Kill,
    /// SIGSTOP for 12 s, longer than its leases, its claims and the database's bound on a session idle in a
    /// transaction, then SIGCONT: it wakes believing it still owns what it held, and must not act twice.
    Stall,
}

/// The suite's RabbitMQ: one private node, or a private cluster of three.
pub(crate) enum Broker {
    Single(Rabbit),
    Cluster(RabbitCluster),
}

impl Broker {
    /// `AMQP_URL` of the services: the node, or every node of the cluster.
    pub(crate) fn url(&self) -> String {
        match self {
            Self::Single(rabbit) => rabbit.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }

    pub(crate) fn single(&self) -> &Rabbit {
        match self {
            Self::Single(rabbit) => rabbit,
            Self::Cluster(_) => panic!("this scenario needs the single node"),
        }
    }

    pub(crate) fn cluster(&self) -> &RabbitCluster {
        match self {
            Self::Cluster(cluster) => cluster,
            Self::Single(_) => panic!("this scenario needs the cluster"),
        }
    }
}

/// The two suites (one node, three nodes) share the machine's two cores: one at a time, so that neither's
/// bounds measure the other's load.
pub(crate) static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) struct Suite {
    pub(crate) pg: Postgres,
    /// A synchronous standby of `pg`, and the stable address the services reach the primary through, when the
    /// suite fails the database over.
    pub(crate) failover: Option<(Postgres, Forwarder)>,
    pub(crate) rabbit: Broker,
    pub(crate) services: BTreeMap<&'static str, Service>,
    /// Second instances of every service, when the suite runs two of each.
    pub(crate) replicas: Vec<Service>,
    /// The first gateway's URL (requests sent by hand go there).
    pub(crate) gateway: String,
    /// Every gateway's URL (the shoppers use them all).
    pub(crate) gateways: Vec<String>,
    /// The first inventory-manager's URL (the catalogue is loaded there).
    pub(crate) inventory_url: String,
    pub(crate) checkout_db: PgPool,
    pub(crate) cart_db: PgPool,
    pub(crate) notifier_db: PgPool,
    pub(crate) smtp: SmtpServer,
    pub(crate) audit_binary: PathBuf,
    pub(crate) audit_env: BTreeMap<String, String>,
    pub(crate) rows: Vec<Row>,
    pub(crate) failures: Vec<String>,
    pub(crate) _dir: TempDir,
}

/// A directory removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub(crate) const SERVICES: [&str; 6] =
    ["inventory-manager", "payment-gateway", "checkout-manager", "cart-manager", "notifier", "api-gateway"];

impl Suite {
    /// A suite on one broker node or a three-node cluster, with `instances` copies of every service.
    pub(crate) async fn start(cluster: bool, instances: usize) -> Self {
        Self::start_with(cluster, instances, false).await
    }

    /// As [`Suite::start`]; with `failover`, PostgreSQL has a synchronous standby and everyone reaches the
    /// primary through a forwarder the suite can repoint.
    pub(crate) async fn start_with(cluster: bool, instances: usize, failover: bool) -> Self {
        ordermesh_nemesis::infra::require_root(
            "the fault suite starts a private PostgreSQL cluster (as user postgres) and a private RabbitMQ node, and",
        );
        // One directory per suite: the suites of one run take turns, and a failed one's logs must survive the next.
        static SUITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SUITES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("ordermesh-fault-suite-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pg = Postgres::create(&dir);
        let failover = if failover {
            let standby = Postgres::synchronous_standby(&pg, &dir, "pg-standby");
            let forwarder = Forwarder::start(pg.port).await;
            Some((standby, forwarder))
        } else {
            None
        };
        let db_url = |db: &str| failover.as_ref().map_or_else(|| pg.url(db), |(_, forwarder)| forwarder.url(db));
        let rabbit = if cluster {
            Broker::Cluster(RabbitCluster::create(&dir).await)
        } else {
            Broker::Single(Rabbit::create(&dir).await)
        };
        let audit_binary = PathBuf::from(env!("CARGO_BIN_EXE_ordermesh"));
        let binaries = audit_binary.parent().unwrap().to_owned();
        let inventory_ports: Vec<u16> = (0..instances).map(|_| free_port()).collect();
        let gateway_ports: Vec<u16> = (0..instances).map(|_| free_port()).collect();
        let (inventory_port, gateway_port) = (inventory_ports[0], gateway_ports[0]);

        let mut common: BTreeMap<String, String> = [
            ("RUST_LOG", "info,sqlx=warn,h2=warn,lapin=warn"),
            ("CHECKOUT_POLL_MS", "100"),
            ("CART_OUTBOX_POLL_MS", "100"),
            ("CHECKOUT_PAYMENT_TIMEOUT_MS", "3000"),
            ("CHECKOUT_RETRY_BASE_MS", "100"),
            ("CHECKOUT_MAX_BACKOFF_MS", "1000"),
            ("CHECKOUT_MAX_RESERVE_ATTEMPTS", "4"),
            ("INVENTORY_SWEEP_INTERVAL_MS", "200"),
            ("PAYMENT_LATENCY_MS", "150"),
            ("GATEWAY_REQUEST_TIMEOUT_MS", "3000"),
            ("INVENTORY_TIMEOUT_MS", "1000"),
            // The suite drives the shop's routes without keys; keys have tests of their own.
            ("GATEWAY_AUTH", "off"),
            // The fault suite is about crashes and restarts; the nemesis runs with inventory's tokens.
            ("INVENTORY_AUTH", "off"),
            // A send is bounded by twice this, and a crashed sender's claim runs out 2 s after that.
            ("SMTP_TIMEOUT_MS", "4000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        common.insert("AMQP_URL".into(), rabbit.url());
        let inventory_urls: Vec<String> = inventory_ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
        // Every inventory replica: the clients spread their calls over them.
        common.insert("INVENTORY_URL".into(), inventory_urls.join(","));
        common.insert("INVENTORY_LISTEN_ADDR".into(), format!("127.0.0.1:{inventory_port}"));
        common.insert("GATEWAY_LISTEN_ADDR".into(), format!("127.0.0.1:{gateway_port}"));
        let smtp = SmtpServer::start().await;
        common.insert("SMTP_URL".into(), smtp.url());
        for (prefix, db) in [
            ("INVENTORY", "inventory"),
            ("CART", "cart"),
            ("CHECKOUT", "checkout"),
            ("PAYMENT", "payment"),
            ("NOTIFIER", "notifier"),
        ] {
            common.insert(format!("{prefix}_DATABASE_URL"), db_url(&format!("ordermesh_{db}")));
            // Several instances of a service may run at once here: each takes a free port for its metrics.
            common.insert(format!("{prefix}_METRICS_ADDR"), "127.0.0.1:0".into());
        }
        let mut services = BTreeMap::new();
        for name in SERVICES {
            let mut service = Service::new(name, &binaries, common.clone(), &dir);
            service.start();
            services.insert(name, service);
        }
        // Later instances: the same settings, but for the listeners of inventory and the gateway.
        let mut replicas = Vec::new();
        for i in 1..instances {
            for name in SERVICES {
                let mut env = common.clone();
                env.insert("INVENTORY_LISTEN_ADDR".into(), format!("127.0.0.1:{}", inventory_ports[i]));
                env.insert("GATEWAY_LISTEN_ADDR".into(), format!("127.0.0.1:{}", gateway_ports[i]));
                let mut replica = Service::instance(name, i + 1, &binaries, env, &dir);
                replica.start();
                replicas.push(replica);
            }
        }
        for port in &inventory_ports {
            wait_for_port(*port, Duration::from_secs(30), "inventory-manager").await;
        }
        for port in &gateway_ports {
            wait_for_port(*port, Duration::from_secs(30), "api-gateway").await;
        }
        let gateway = format!("http://127.0.0.1:{gateway_port}");
        let gateways: Vec<String> = gateway_ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http.get(format!("{gateway}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "the mesh was not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The gateway being ready says nothing of the workers: each creates its own database when it starts,
        // so wait for the database to exist rather than race the service that makes it.
        let connect = |db: &str| {
            let (url, db) = (db_url(db), db.to_owned());
            async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    match sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url).await {
                        Ok(pool) => break pool,
                        Err(err) if Instant::now() < deadline => {
                            tracing::debug!(%db, error = %err, "database not there yet");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(err) => panic!("{db} did not appear within 30 s: {err}"),
                    }
                }
            }
        };
        let (checkout_db, cart_db) = (connect("ordermesh_checkout").await, connect("ordermesh_cart").await);
        let notifier_db = connect("ordermesh_notifier").await;
        Self {
            pg,
            failover,
            rabbit,
            services,
            replicas,
            gateway,
            gateways,
            inventory_url: inventory_urls[0].clone(),
            checkout_db,
            cart_db,
            notifier_db,
            smtp,
            audit_binary,
            audit_env: common,
            rows: Vec::new(),
            failures: Vec::new(),
            _dir: TempDir(dir),
        }
    }

    pub(crate) fn service(&mut self, name: &str) -> &mut Service {
        self.services.get_mut(name).unwrap()
    }

    /// Orders not yet final, by status: what a fault hits.
    pub(crate) async fn in_flight(&self) -> String {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM orders WHERE step <> 'done' GROUP BY status ORDER BY status")
                .fetch_all(&self.checkout_db)
                .await
                .unwrap_or_default();
        if rows.is_empty() {
            return "0".into();
        }
        let total: i64 = rows.iter().map(|r| r.1).sum();
        let parts: Vec<String> = rows.iter().map(|(s, n)| format!("{n} {s}")).collect();
        format!("{total} ({})", parts.join(", "))
    }

    /// Waits until every accepted order exists and is final, and nothing waits in cart's outbox; returns
    /// how long after `since` that was (an error if not within `bound` of `since`).
    pub(crate) async fn settled(
        &self,
        accepted: &[String],
        since: Instant,
        bound: Duration,
    ) -> Result<Duration, String> {
        let started = since;
        loop {
            let open: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE step <> 'done'")
                .fetch_one(&self.checkout_db)
                .await
                .unwrap_or(i64::MAX);
            let known: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE order_id = ANY($1)")
                .bind(accepted)
                .fetch_one(&self.checkout_db)
                .await
                .unwrap_or(0);
            let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE parked_at IS NULL")
                .fetch_one(&self.cart_db)
                .await
                .unwrap_or(i64::MAX);
            if open == 0 && known == accepted.len() as i64 && outbox == 0 {
                return Ok(started.elapsed());
            }
            if started.elapsed() > bound {
                return Err(format!(
                    "after {bound:?}: {open} orders not final, {} of {} accepted orders unknown, {outbox} in cart's outbox ({})",
                    accepted.len() as i64 - known,
                    accepted.len(),
                    self.in_flight().await
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `ordermesh audit` against the suite's databases and broker.
    pub(crate) async fn audit(&self) -> Result<String, String> {
        ordermesh_nemesis::infra::audit(&self.audit_binary, &self.audit_env, Duration::from_secs(30)).await
    }

    pub(crate) async fn channel(&self) -> (lapin::Connection, lapin::Channel) {
        let conn = ordermesh_bus::connection::connect_first(&self.rabbit.url()).await.expect("private broker");
        let channel = conn.create_channel().await.unwrap();
        channel.confirm_select(Default::default()).await.unwrap();
        (conn, channel)
    }

    pub(crate) async fn publish(&self, queue: &str, body: &[u8]) {
        ordermesh_testkit::amqp::publish_raw(&self.rabbit.url(), queue, body).await;
    }

    /// Messages in each dead-letter queue, with their reasons; `purge` empties them afterwards.
    pub(crate) async fn dead_letters(&self, purge: bool) -> BTreeMap<String, Vec<String>> {
        let (conn, channel) = self.channel().await;
        let mut all = BTreeMap::new();
        let topology = Topology::default();
        for queue in topology.work_queues() {
            let dlq = Topology::dead_letter_queue(&queue);
            let mut reasons = Vec::new();
            while let Ok(Some(m)) = channel.basic_get(dlq.as_str().into(), Default::default()).await {
                let reason = ordermesh_bus::dead_letters::reason(m.delivery.properties.headers().as_ref(), &topology);
                reasons.push(reason.unwrap_or_else(|| "<no reason>".into()));
                if purge {
                    let _ = m.delivery.ack(Default::default()).await;
                }
            }
            if !reasons.is_empty() {
                all.insert(dlq, reasons);
            }
        }
        let _ = conn.close(200, "ok".into()).await;
        all
    }

    /// Final statuses of these orders, for the table.
    pub(crate) async fn outcomes(&self, accepted: &[String]) -> String {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, count(*) FROM orders WHERE order_id = ANY($1) GROUP BY status ORDER BY count(*) DESC",
        )
        .bind(accepted)
        .fetch_all(&self.checkout_db)
        .await
        .unwrap_or_default();
        rows.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ")
    }

    /// The checks after every scenario: every accepted order final within `bound` of `since`, no dead
    /// letters, audit clean. Returns the result and the time from `since` to settled.
    pub(crate) async fn check(&mut self, accepted: &[String], since: Instant, bound: Duration) -> (String, String) {
        let mut problems = Vec::new();
        let recovery = match self.settled(accepted, since, bound).await {
            Ok(t) => format!("{:.1} s", t.as_secs_f64()),
            Err(e) => {
                problems.push(e);
                "not settled".into()
            }
        };
        let dead = self.dead_letters(true).await;
        if !dead.is_empty() {
            problems.push(format!("unexpected dead letters: {dead:?}"));
        }
        if let Err(report) = self.audit().await {
            problems.push(format!("audit: {report}"));
        }
        let result = if problems.is_empty() {
            format!("pass: {} orders ({})", accepted.len(), self.outcomes(accepted).await)
        } else {
            "FAIL".into()
        };
        (result, if problems.is_empty() { recovery } else { problems.join("; ") })
    }

    pub(crate) fn record(
        &mut self,
        fault: &'static str,
        injected: &'static str,
        in_flight: String,
        checked: &'static str,
        outcome: (String, String),
    ) {
        let (result, recovery) = outcome;
        if result == "FAIL" {
            self.failures.push(format!("{fault}: {recovery}"));
        }
        eprintln!("fault suite {}: {fault}: {result} ({recovery})", chrono::Utc::now().format("%H:%M:%S"));
        self.rows.push(Row { fault, injected, in_flight, checked, result, recovery });
    }

    /// One service's process disrupted in the middle of a stream of checkouts (see [`Disruption`]); every
    /// accepted order must then be final within the bound of its coming back.
    pub(crate) async fn process_scenario(&mut self, name: &'static str, fault: &'static str, how: Disruption) {
        let load = self.stream(fault).await;
        load.wait_for_orders(15).await;
        let in_flight = self.in_flight().await;
        let (injected, checked, back) = match how {
            Disruption::Kill => {
                self.service(name).kill9().await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                self.service(name).start();
                (
                    "SIGKILL mid-stream, restarted after 2 s",
                    "every accepted order final within 10 s of the restart; audit: stock, one order per checkout, one charge per CONFIRMED, holds match orders; no DLQ",
                    "the restart",
                )
            }
            Disruption::Stall => {
                self.service(name).signal("STOP");
                tokio::time::sleep(Duration::from_secs(12)).await;
                self.service(name).signal("CONT");
                (
                    "SIGSTOP mid-stream for 12 s (past its leases and the 10 s idle-in-transaction bound), then SIGCONT",
                    "every accepted order final within 10 s of SIGCONT; audit: stock, one order per checkout, one charge per CONFIRMED, holds match orders; no DLQ",
                    "SIGCONT",
                )
            }
        };
        let back_at = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let accepted = load.stop().await;
        let (result, recovery) = self.check(&accepted, back_at, SETTLE_BOUND).await;
        self.record(fault, injected, in_flight, checked, (result, format!("all final {recovery} after {back}")));
    }

    pub(crate) fn restart_with(&mut self, name: &str, changes: &[(&str, &str)]) -> BTreeMap<String, String> {
        let service = self.service(name);
        let before = service.env.clone();
        for (k, v) in changes {
            service.env.insert((*k).to_owned(), (*v).to_owned());
        }
        before
    }

    pub(crate) async fn respawn(&mut self, name: &str, env: Option<BTreeMap<String, String>>) {
        let service = self.service(name);
        let _ = service.terminate(Duration::from_secs(15)).await;
        if let Some(env) = env {
            service.env = env;
        }
        service.start();
    }

    /// Prints the table (and writes it to `target/<file>`), checks every service still runs, and fails the
    /// test with every failure found.
    pub(crate) async fn finish(mut self, started: Instant, file: &str) {
        let table = table::markdown(&self.rows, started);
        eprintln!("{table}");
        let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target").join(file);
        let _ = std::fs::write(target, &table);
        for name in SERVICES {
            assert!(self.service(name).is_running(), "{name} is not running at the end");
        }
        for replica in &mut self.replicas {
            assert!(replica.is_running(), "the second {} is not running at the end", replica.name);
        }
        assert!(self.failures.is_empty(), "fault suite failures:\n{}\n\n{table}", self.failures.join("\n"));
    }

    /// Starts a stream of shoppers, with the scarce product restocked first (while nothing flows).
    pub(crate) async fn stream(&self, tag: &str) -> Load {
        load::restock(&self.inventory_url).await;
        Load::start(&self.gateways, tag)
    }
}
