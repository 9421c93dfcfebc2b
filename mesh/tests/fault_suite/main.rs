//! The fault suite: the six services as real child processes of their own binaries, on a private
//! PostgreSQL cluster and a private RabbitMQ node, under a steady stream of checkouts (some rejected
//! for stock, some declined for money). Each scenario injects one fault; after each, every accepted
//! order must be final within its bound, the dead-letter queues must hold exactly the poison that was
//! sent, and `ordermesh audit` (the command operators run) must find nothing. The table it prints (and
//! writes to `target/fault-suite.md`) is the one in docs/testing.md.

mod cluster;
mod load;
mod pg_failover;
mod replicas;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use load::Load;
use ordermesh_bus::Topology;
use ordermesh_messages::{
    ClientId, Envelope, OrderId, ProductId, kinds,
    payloads::{ChargeRequest, OrderLine, PaymentOutcome, PaymentResult, PlaceOrder},
};
use ordermesh_nemesis::infra::{Forwarder, Postgres, Rabbit, RabbitCluster, Service, free_port, wait_for_port};
use ordermesh_testkit::smtp::SmtpServer;
use sqlx::PgPool;

/// How long one of the suite's tests may run before the watchdog ends the binary: several times what each
/// takes (the longest, every fault on one node, about five minutes), so only a hang reaches it.
const SCENARIO_LIMIT: Duration = Duration::from_secs(1200);

/// Every accepted order must be final this soon after the fault is over (the service is back).
const SETTLE_BOUND: Duration = Duration::from_secs(10);

/// How a scenario disrupts one service's process.
#[derive(Debug, Clone, Copy)]
enum Disruption {
    /// SIGKILL, restarted after 2 s.
    Kill,
    /// SIGSTOP for 12 s, longer than its leases, its claims and the database's bound on a session idle in a
    /// transaction, then SIGCONT: it wakes believing it still owns what it held, and must not act twice.
    Stall,
}

struct Row {
    fault: &'static str,
    injected: &'static str,
    in_flight: String,
    checked: &'static str,
    result: String,
    recovery: String,
}

/// The suite's RabbitMQ: one private node, or a private cluster of three.
enum Broker {
    Single(Rabbit),
    Cluster(RabbitCluster),
}

impl Broker {
    /// `AMQP_URL` of the services: the node, or every node of the cluster.
    fn url(&self) -> String {
        match self {
            Self::Single(rabbit) => rabbit.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }

    fn single(&self) -> &Rabbit {
        match self {
            Self::Single(rabbit) => rabbit,
            Self::Cluster(_) => panic!("this scenario needs the single node"),
        }
    }

    fn cluster(&self) -> &RabbitCluster {
        match self {
            Self::Cluster(cluster) => cluster,
            Self::Single(_) => panic!("this scenario needs the cluster"),
        }
    }
}

/// The two suites (one node, three nodes) share the machine's two cores: one at a time, so that neither's
/// bounds measure the other's load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Suite {
    pg: Postgres,
    /// A synchronous standby of `pg`, and the stable address the services reach the primary through, when the
    /// suite fails the database over.
    failover: Option<(Postgres, Forwarder)>,
    rabbit: Broker,
    services: BTreeMap<&'static str, Service>,
    /// Second instances of every service, when the suite runs two of each.
    replicas: Vec<Service>,
    /// The first gateway's URL (requests sent by hand go there).
    gateway: String,
    /// Every gateway's URL (the shoppers use them all).
    gateways: Vec<String>,
    /// The first inventory-manager's URL (the catalogue is loaded there).
    inventory_url: String,
    checkout_db: PgPool,
    cart_db: PgPool,
    notifier_db: PgPool,
    smtp: SmtpServer,
    audit_binary: PathBuf,
    audit_env: BTreeMap<String, String>,
    rows: Vec<Row>,
    failures: Vec<String>,
    _dir: TempDir,
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

const SERVICES: [&str; 6] =
    ["inventory-manager", "payment-gateway", "checkout-manager", "cart-manager", "notifier", "api-gateway"];

impl Suite {
    /// A suite on one broker node or a three-node cluster, with `instances` copies of every service.
    async fn start(cluster: bool, instances: usize) -> Self {
        Self::start_with(cluster, instances, false).await
    }

    /// As [`Suite::start`]; with `failover`, PostgreSQL has a synchronous standby and everyone reaches the
    /// primary through a forwarder the suite can repoint.
    async fn start_with(cluster: bool, instances: usize, failover: bool) -> Self {
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

    fn service(&mut self, name: &str) -> &mut Service {
        self.services.get_mut(name).unwrap()
    }

    /// Orders not yet final, by status: what a fault hits.
    async fn in_flight(&self) -> String {
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
    async fn settled(&self, accepted: &[String], since: Instant, bound: Duration) -> Result<Duration, String> {
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
    async fn audit(&self) -> Result<String, String> {
        ordermesh_nemesis::infra::audit(&self.audit_binary, &self.audit_env, Duration::from_secs(30)).await
    }

    async fn channel(&self) -> (lapin::Connection, lapin::Channel) {
        let conn = ordermesh_bus::connection::connect_first(&self.rabbit.url()).await.expect("private broker");
        let channel = conn.create_channel().await.unwrap();
        channel.confirm_select(Default::default()).await.unwrap();
        (conn, channel)
    }

    async fn publish(&self, queue: &str, body: &[u8]) {
        ordermesh_testkit::amqp::publish_raw(&self.rabbit.url(), queue, body).await;
    }

    /// Messages in each dead-letter queue, with their reasons; `purge` empties them afterwards.
    async fn dead_letters(&self, purge: bool) -> BTreeMap<String, Vec<String>> {
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
    async fn outcomes(&self, accepted: &[String]) -> String {
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
    async fn check(&mut self, accepted: &[String], since: Instant, bound: Duration) -> (String, String) {
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

    fn record(
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
    async fn process_scenario(&mut self, name: &'static str, fault: &'static str, how: Disruption) {
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

    fn restart_with(&mut self, name: &str, changes: &[(&str, &str)]) -> BTreeMap<String, String> {
        let service = self.service(name);
        let before = service.env.clone();
        for (k, v) in changes {
            service.env.insert((*k).to_owned(), (*v).to_owned());
        }
        before
    }

    async fn respawn(&mut self, name: &str, env: Option<BTreeMap<String, String>>) {
        let service = self.service(name);
        let _ = service.terminate(Duration::from_secs(15)).await;
        if let Some(env) = env {
            service.env = env;
        }
        service.start();
    }

    /// Prints the table (and writes it to `target/<file>`), checks every service still runs, and fails the
    /// test with every failure found.
    async fn finish(mut self, started: Instant, file: &str) {
        let mut table = String::from(
            "| fault | how injected | checkouts in flight at the fault | what was checked | result | recovery |\n|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let _ = writeln!(
                table,
                "| {} | {} | {} | {} | {} | {} |",
                r.fault, r.injected, r.in_flight, r.checked, r.result, r.recovery
            );
        }
        let _ = writeln!(table, "\nWhole suite: {:.0} s.", started.elapsed().as_secs_f64());
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
    async fn stream(&self, tag: &str) -> Load {
        load::restock(&self.inventory_url).await;
        Load::start(&self.gateways, tag)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_keeps_its_promises_through_every_fault() {
    ordermesh_testkit::watchdog::arm(crate::SCENARIO_LIMIT);
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut suite = Suite::start(false, 1).await;
    load::seed(&suite.inventory_url).await;
    let suite_started = Instant::now();

    // Warm-up: the steady stream alone.
    let load = suite.stream("baseline").await;
    load.wait_for_orders(20).await;
    let accepted = load.stop().await;
    let outcome = suite.check(&accepted, Instant::now(), SETTLE_BOUND).await;
    suite.record("none (baseline)", "-", "-".into(), "every accepted order final; audit clean", outcome);

    for (name, fault) in [
        ("checkout-manager", "kill -9 checkout-manager"),
        ("payment-gateway", "kill -9 payment-gateway"),
        ("cart-manager", "kill -9 cart-manager"),
        ("inventory-manager", "kill -9 inventory-manager"),
        ("api-gateway", "kill -9 api-gateway"),
        ("checkout-manager", "kill -9 checkout-manager (again, later in the stream)"),
    ] {
        suite.process_scenario(name, fault, Disruption::Kill).await;
    }
    for (name, fault) in
        [("checkout-manager", "SIGSTOP checkout-manager (a stall)"), ("cart-manager", "SIGSTOP cart-manager (a stall)")]
    {
        suite.process_scenario(name, fault, Disruption::Stall).await;
    }

    // RabbitMQ stopped and started: persistent messages survive, every service reconnects.
    {
        let load = suite.stream("rabbit").await;
        load.wait_for_orders(15).await;
        let in_flight = suite.in_flight().await;
        suite.rabbit.single().stop();
        tokio::time::sleep(Duration::from_secs(2)).await;
        suite.rabbit.single().start().await;
        let back = Instant::now();
        let first = load.next_checkout_after(back, Duration::from_secs(20)).await;
        let accepted = load.stop().await;
        let (result, recovery) = suite.check(&accepted, back, SETTLE_BOUND).await;
        let recovery = match first {
            Some(t) if result != "FAIL" => format!(
                "first checkout {:.2} s after the broker accepted connections; all final {recovery} after it",
                t.as_secs_f64()
            ),
            Some(_) => recovery,
            None => {
                suite.failures.push("no checkout after the broker restart".into());
                "no checkout after the broker came back".into()
            }
        };
        if let Some(t) = first
            && t > Duration::from_secs(1)
        {
            suite.failures.push(format!("first checkout {t:?} after the broker returned (bound 1 s)"));
        }
        suite.record(
            "RabbitMQ stopped and started",
            "rabbitmqctl stop of the private node, started again 2 s later",
            in_flight,
            "first checkout within 1 s of the broker returning; every order final; audit clean",
            (result, recovery),
        );
    }

    // PostgreSQL stopped (fast: sessions cut) and started.
    {
        let load = suite.stream("postgres").await;
        load.wait_for_orders(15).await;
        let in_flight = suite.in_flight().await;
        suite.pg.stop();
        tokio::time::sleep(Duration::from_secs(2)).await;
        suite.pg.start();
        let back = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let accepted = load.stop().await;
        let (result, recovery) = suite.check(&accepted, back, SETTLE_BOUND).await;
        let outcome = (result, format!("all final {recovery} after it returned"));
        suite.record(
            "PostgreSQL stopped and started",
            "pg_ctl stop -m fast of the private cluster, started 2 s later",
            in_flight,
            "every order final; audit clean",
            outcome,
        );
    }

    // inventory out of checkout-manager's reach for longer than the saga's retry budget (carts still
    // reach it, so orders keep coming): those orders FAIL cleanly, and nothing stays held.
    {
        let good = suite.restart_with("checkout-manager", &[("INVENTORY_URL", "http://127.0.0.1:1")]);
        suite.respawn("checkout-manager", None).await;
        let load = suite.stream("inventory-down").await;
        load.wait_for_orders(10).await;
        let in_flight = suite.in_flight().await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        suite.respawn("checkout-manager", Some(good)).await;
        let back = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let accepted = load.stop().await;
        let (mut result, recovery) = suite.check(&accepted, back, SETTLE_BOUND).await;
        let failed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'FAILED' AND order_id = ANY($1)")
                .bind(&accepted)
                .fetch_one(&suite.checkout_db)
                .await
                .unwrap();
        if failed == 0 {
            result = "FAIL".into();
            suite.failures.push("no order ran out of its reserve budget while inventory was out of reach".into());
        }
        suite.record(
            "inventory unreachable beyond the retry budget",
            "checkout-manager restarted with inventory out of reach for ~5 s (reserve budget: 4 tries, ~1.5 s), then restarted with it back",
            in_flight,
            "orders past the budget FAILED with their holds released (audit); none stuck",
            (result, format!("all final {recovery} after inventory was back in reach")),
        );
    }

    // Poison on every queue: each goes to its dead-letter queue with its reason, and nothing else does.
    {
        let topology = Topology::default();
        let mut sent = 0;
        for queue in topology.work_queues() {
            suite.publish(&queue, b"{ not json").await;
            suite.publish(&queue, &Envelope::new("order.teleport", &serde_json::json!({})).to_vec()).await;
            let impossible = match queue.as_str() {
                q if q == topology.cart_jobs() => Envelope::new(
                    kinds::CART_ADD_ITEM,
                    &serde_json::json!({"client_id": "x", "product_id": "y", "quantity": 0}),
                ),
                q if q == topology.checkout_jobs() => {
                    Envelope::new(kinds::ORDER_PLACE, &serde_json::json!({"order_id": "o", "lines": []}))
                }
                q if q == topology.checkout_queries() => {
                    Envelope::new(kinds::ORDER_GET, &serde_json::json!({"order_id": ""}))
                }
                q if q == topology.payment_results() => {
                    Envelope::new(kinds::PAYMENT_RESULT, &serde_json::json!({"outcome": "maybe"}))
                }
                q if q == topology.notifier_jobs() => Envelope::new(
                    kinds::CLIENT_PUT_PROFILE,
                    &serde_json::json!({"client_id": "x", "email": "not an address"}),
                ),
                q if q == topology.notifier_events() => Envelope::new(
                    kinds::events::ORDER_CONFIRMED,
                    &serde_json::json!({"order_id": "o", "client_id": "x", "status": 7}),
                ),
                _ => Envelope::new(
                    kinds::PAYMENT_CHARGE,
                    &serde_json::json!({"payment_id": "p", "amount_cents": "lots"}),
                ),
            };
            suite.publish(&queue, &impossible.to_vec()).await;
            sent += 3;
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        let dead = loop {
            let dead = suite.dead_letters(false).await;
            if dead.values().map(Vec::len).sum::<usize>() >= sent || Instant::now() > deadline {
                break dead;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let exact = dead.len() == topology.work_queues().len()
            && dead.values().all(|r| r.len() == 3 && r.iter().all(|x| x != "<no reason>"));
        let _ = suite.dead_letters(true).await;
        let (mut result, mut recovery) = suite.check(&[], Instant::now(), SETTLE_BOUND).await;
        if !exact {
            result = "FAIL".into();
            recovery = format!("dead letters were {dead:?}");
        }
        suite.record(
            "poison messages on every queue",
            "malformed JSON, an unknown type and an impossible payload on each of the 7 work queues",
            "0".into(),
            "each DLQ holds exactly its 3, each with x-ordermesh-reason; the consumers carry on",
            (result, recovery),
        );
    }

    // The same job, payment request and payment result delivered twice: nothing is done twice.
    {
        let load = suite.stream("dup").await;
        load.wait_for_orders(5).await;
        let accepted = load.stop().await;
        let _ = suite.settled(&accepted, Instant::now(), SETTLE_BOUND).await;
        let order_id = accepted.first().cloned().expect("an order to replay");
        let row: (String, i64) = sqlx::query_as("SELECT client_id, total_cents FROM orders WHERE order_id = $1")
            .bind(&order_id)
            .fetch_one(&suite.checkout_db)
            .await
            .unwrap();
        let lines: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT product_id, quantity, unit_price_cents FROM order_lines WHERE order_id = $1")
                .bind(&order_id)
                .fetch_all(&suite.checkout_db)
                .await
                .unwrap();
        let id = OrderId::parse(order_id.clone()).unwrap();
        let client = ClientId::parse(row.0).unwrap();
        let place = Envelope::new(
            kinds::ORDER_PLACE,
            &PlaceOrder {
                order_id: id.clone(),
                client_id: client.clone(),
                lines: lines
                    .into_iter()
                    .map(|(p, quantity, unit_price_cents)| OrderLine {
                        product_id: ProductId::parse(p).unwrap(),
                        quantity,
                        unit_price_cents,
                    })
                    .collect(),
                total_cents: row.1,
                created_at: chrono::Utc::now(),
                channel: ordermesh_messages::Channel::parse("phone").unwrap(),
            },
        );
        let charge = Envelope::new(
            kinds::PAYMENT_CHARGE,
            &ChargeRequest {
                payment_id: order_id.clone(),
                order_id: id.clone(),
                client_id: client,
                amount_cents: row.1,
                attempt: 1,
            },
        );
        let result = Envelope::new(
            kinds::PAYMENT_RESULT,
            &PaymentResult {
                payment_id: order_id.clone(),
                order_id: id,
                attempt: 1,
                outcome: PaymentOutcome::Succeeded,
            },
        );
        let topology = Topology::default();
        for _ in 0..2 {
            suite.publish(&topology.checkout_jobs(), &place.to_vec()).await;
            suite.publish(&topology.payment_requests(), &charge.to_vec()).await;
            suite.publish(&topology.payment_results(), &result.to_vec()).await;
        }
        // A fresh checkout job, delivered twice.
        load::add_for(&suite.gateway, "dup-twice").await;
        let job = Envelope::new(
            kinds::CART_CHECKOUT,
            &ordermesh_messages::payloads::Checkout {
                client_id: ClientId::parse("dup-twice").unwrap(),
                idempotency_key: "request:dup".into(),
                channel: Default::default(),
            },
        );
        suite.publish(&topology.cart_jobs(), &job.to_vec()).await;
        suite.publish(&topology.cart_jobs(), &job.to_vec()).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let made: Vec<String> = loop {
            let made: Vec<String> = sqlx::query_scalar("SELECT order_id FROM orders WHERE client_id = 'dup-twice'")
                .fetch_all(&suite.checkout_db)
                .await
                .unwrap();
            if !made.is_empty() || Instant::now() > deadline {
                break made;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut all = accepted.clone();
        all.extend(made.iter().cloned());
        let (mut result, recovery) = suite.check(&all, Instant::now(), SETTLE_BOUND).await;
        if made.len() != 1 {
            result = "FAIL".into();
        }
        suite.record(
            "duplicates",
            "order.place, payment.charge and payment.result of a CONFIRMED order, and a cart.checkout job, each delivered twice",
            "0".into(),
            "one order per checkout, one charge, stock committed once (audit)",
            (result, format!("{recovery}; the doubled checkout made {} order(s)", made.len())),
        );
    }

    // A reservation that expires while the payment is pending: the order fails and the money goes back.
    {
        let checkout_env = suite.restart_with("checkout-manager", &[("CHECKOUT_RESERVATION_TTL_SECONDS", "1")]);
        suite.respawn("checkout-manager", None).await;
        let payment_env = suite.restart_with("payment-gateway", &[("PAYMENT_LATENCY_MS", "2500")]);
        suite.respawn("payment-gateway", None).await;
        let load = suite.stream("expiry").await;
        load.wait_for_orders(5).await;
        let accepted = load.stop().await;
        let outcome = suite.check(&accepted, Instant::now(), Duration::from_secs(20)).await;
        let refunded: i64 =
            sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'FAILED' AND order_id = ANY($1)")
                .bind(&accepted)
                .fetch_one(&suite.checkout_db)
                .await
                .unwrap();
        suite.record(
            "reservation expires while payment is pending",
            "reservation TTL 1 s, provider latency 2.5 s",
            format!("{}", accepted.len()),
            "orders FAILED with the hold expired and the charge refunded (audit: none kept)",
            (outcome.0, format!("{}; {refunded} of {} FAILED", outcome.1, accepted.len())),
        );
        suite.respawn("checkout-manager", Some(checkout_env)).await;
        suite.respawn("payment-gateway", Some(payment_env)).await;
    }

    // Payment failing technically half of the time.
    {
        let payment_env = suite.restart_with("payment-gateway", &[("PAYMENT_FAILURE_RATE", "0.5")]);
        suite.respawn("payment-gateway", None).await;
        let load = suite.stream("flaky").await;
        load.wait_for_orders(20).await;
        let accepted = load.stop().await;
        let outcome = suite.check(&accepted, Instant::now(), Duration::from_secs(20)).await;
        suite.record(
            "payment fails technically half of the time",
            "PAYMENT_FAILURE_RATE=0.5",
            "-".into(),
            "retried with one charge per CONFIRMED order; the rest FAILED with nothing kept (audit)",
            outcome,
        );
        suite.respawn("payment-gateway", Some(payment_env)).await;
    }

    // The notifier killed while the SMTP server holds its answer to a message: the unanswered emails are
    // sent again after the restart, and every order event is emailed exactly once.
    {
        let shoppers: Vec<String> = (0..5).map(|i| format!("mail-{i}")).collect();
        let http = reqwest::Client::new();
        for client in &shoppers {
            let answer = http
                .put(format!("{}/clients/{client}", suite.gateway))
                .json(&serde_json::json!({"email": format!("{client}@example.com")}))
                .send()
                .await
                .expect("gateway answers");
            assert_eq!(answer.status().as_u16(), 200, "profile of {client}");
        }
        suite.smtp.hold_answers(Duration::from_secs(3));
        let mut accepted = Vec::new();
        for client in &shoppers {
            load::add_for(&suite.gateway, client).await;
            let answer = http
                .post(format!("{}/checkOutCart", suite.gateway))
                .json(&serde_json::json!({"clientID": client}))
                .send()
                .await
                .expect("gateway answers");
            let body: serde_json::Value = answer.json().await.unwrap_or_default();
            accepted.push(body["orderID"].as_str().expect("checkout accepted").to_owned());
        }
        // Killed once at least one email is in the SMTP server's hands, unanswered.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut sending = 0i64;
        while sending == 0 && Instant::now() < deadline {
            sending = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE state = 'sending'")
                .fetch_one(&suite.notifier_db)
                .await
                .unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let in_flight = format!("{sending} email(s) being sent");
        suite.service("notifier").kill9().await;
        suite.smtp.hold_answers(Duration::ZERO);
        let before_restart = suite.smtp.accepted().len();
        tokio::time::sleep(Duration::from_secs(1)).await;
        suite.service("notifier").start();
        let back = Instant::now();
        let (mut result, mut recovery) = suite.check(&accepted, back, SETTLE_BOUND).await;
        let emailed_once = |mails: &[ordermesh_testkit::smtp::Mail]| {
            accepted.iter().all(|id| mails.iter().filter(|m| m.body().contains(id.as_str())).count() == 1)
        };
        let mails = suite.smtp.wait_for(Duration::from_secs(30), |m| emailed_once(m)).await;
        let counts: Vec<usize> =
            accepted.iter().map(|id| mails.iter().filter(|m| m.body().contains(id.as_str())).count()).collect();
        let sent: i64 =
            sqlx::query_scalar("SELECT count(*) FROM notifications WHERE state = 'sent' AND order_id = ANY($1)")
                .bind(&accepted)
                .fetch_one(&suite.notifier_db)
                .await
                .unwrap_or(0);
        if sending == 0 || counts.iter().any(|&n| n != 1) || sent != accepted.len() as i64 {
            result = "FAIL".into();
            recovery = format!(
                "emails per order {counts:?} (want one each), {sent} recorded sent, {sending} in the server's hands at the kill; {recovery}"
            );
            suite.failures.push(format!("notifier killed mid-send: {recovery}"));
        } else {
            recovery = format!(
                "{} emails accepted before the kill, all {} sent once {:.1} s after the restart",
                before_restart,
                accepted.len(),
                back.elapsed().as_secs_f64()
            );
        }
        suite.record(
            "kill -9 notifier mid-send",
            "SIGKILL while the SMTP server holds its answer to an email (3 s), restarted 1 s later",
            in_flight,
            "every order event emailed exactly once (the test's SMTP server counts); all recorded sent; audit clean",
            (result, recovery),
        );
    }

    // Shutdown: SIGTERM stops each service within its grace period, under load, and nothing is lost.
    {
        let load = suite.stream("shutdown").await;
        load.wait_for_orders(10).await;
        let in_flight = suite.in_flight().await;
        let mut times = Vec::new();
        for name in SERVICES {
            match suite.service(name).terminate(Duration::from_secs(12)).await {
                Some((took, true)) => times.push(format!("{name} {:.1} s", took.as_secs_f64())),
                other => {
                    suite.failures.push(format!("{name} did not exit cleanly within 12 s after SIGTERM: {other:?}"))
                }
            }
        }
        for name in SERVICES {
            suite.service(name).start();
        }
        let back = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let accepted = load.stop().await;
        let outcome = suite.check(&accepted, back, SETTLE_BOUND).await;
        suite.record(
            "SIGTERM of every service",
            "SIGTERM to each in turn under load, then all restarted",
            in_flight,
            "each exits 0 within its 10 s grace; every order final; audit clean",
            (outcome.0, format!("all final {} after the restart; exits: {}", outcome.1, times.join(", "))),
        );
    }

    suite.finish(suite_started, "fault-suite.md").await;
}
