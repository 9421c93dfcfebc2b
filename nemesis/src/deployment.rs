//! The mesh the nemesis attacks: a private three-node RabbitMQ cluster, a private PostgreSQL primary with a
//! synchronous standby, fault-injecting proxies in front of both, a test SMTP server, and two instances of
//! every service as child processes of their own binaries, each with a wall clock the nemesis can move.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use ordermesh_proto::inventory::v1 as pb;
use ordermesh_testkit::smtp::SmtpServer;
use tokio::sync::Mutex;

use crate::infra::{self, Forwarder, Postgres, RabbitCluster, Service, free_port, wait_for_port};

/// The services, in the order they are started.
pub const SERVICES: [&str; 6] =
    ["inventory-manager", "payment-gateway", "checkout-manager", "cart-manager", "notifier", "api-gateway"];

/// Instances of every service.
pub const INSTANCES: usize = 2;

/// libfaketime (Debian's `faketime` package): each instance reads its wall clock's offset from a file of its
/// own, so the nemesis can move one process's clock while it runs. The monotonic clock is left alone, as NTP
/// leaves it: only the wall clock steps.
pub const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The channels the shoppers' keys are for (the gateway's default `ORDERMESH_CHANNELS`).
pub const CHANNELS: [&str; 3] = ["web", "phone", "sales-desk"];

/// The catalogue: id, price in cents, units on hand at the start. `lux` costs more than any shopper's
/// balance (PAYMENT_DECLINED); `scarce` is put back to [`SCARCE_UNITS`] every few seconds, and shoppers race
/// for it (REJECTED).
pub const CATALOGUE: &[(&str, i64, i64)] = &[
    ("p0", 1000, 1_000_000),
    ("p1", 1000, 1_000_000),
    ("p2", 1500, 1_000_000),
    ("p3", 700, 1_000_000),
    ("lux", 150_000, 1_000_000),
    ("scarce", 500, SCARCE_UNITS),
];

/// Units of `scarce` after each restock.
pub const SCARCE_UNITS: i64 = 6;

/// One instance of a service.
#[derive(Debug)]
pub struct Instance {
    pub service: &'static str,
    /// 1 or 2.
    pub number: usize,
    pub process: Mutex<Service>,
    /// The file libfaketime reads the instance's clock offset from (`+0s`, `+3s`, `-2s`).
    pub clock: PathBuf,
}

impl Instance {
    pub fn name(&self) -> String {
        format!("{}#{}", self.service, self.number)
    }
}

/// The database's servers: the primary every service reaches through the proxy, and its synchronous standby.
#[derive(Debug)]
pub struct Database {
    pub primary: Postgres,
    pub standby: Option<Postgres>,
    /// Standbys built so far (each in a directory of its own).
    pub built: usize,
    /// Former primaries, killed by a failover (kept until the end, which stops what is left of them).
    pub retired: Vec<Postgres>,
}

#[derive(Debug)]
pub struct Deployment {
    pub dir: PathBuf,
    pub cluster: RabbitCluster,
    /// One proxy per broker node: the services reach node i through `broker_proxies[i]`.
    pub broker_proxies: Vec<Forwarder>,
    pub database: Mutex<Database>,
    /// The primary's stable address.
    pub db_proxy: Forwarder,
    pub instances: Vec<Instance>,
    pub gateways: Vec<String>,
    pub inventory_urls: Vec<String>,
    pub smtp: SmtpServer,
    /// The settings every service started with (the audit runs with them).
    pub env: BTreeMap<String, String>,
    pub binaries: PathBuf,
    /// An operator token of inventory's, for the catalogue's writes (the services hold a service token).
    pub operator_token: String,
}

/// Each service's variable prefix and database name (`ordermesh_<name>`).
pub const DATABASES: [(&str, &str); 6] = [
    ("INVENTORY", "inventory"),
    ("CART", "cart"),
    ("CHECKOUT", "checkout"),
    ("PAYMENT", "payment"),
    ("NOTIFIER", "notifier"),
    ("GATEWAY", "gateway"),
];

impl Deployment {
    /// Builds and starts everything under `dir`, the services from the binaries in `binaries`.
    pub async fn start(dir: &Path, binaries: &Path) -> anyhow::Result<Self> {
        for name in SERVICES.iter().chain(&["ordermesh"]) {
            let binary = binaries.join(name);
            if !binary.exists() {
                bail!("{} is not built: run `cargo build --release --workspace --bins` first", binary.display());
            }
        }
        if !Path::new(FAKETIME).exists() {
            bail!("{FAKETIME} is missing: install Debian's faketime package (scripts/test does)");
        }
        std::fs::create_dir_all(dir)?;
        let primary = tokio::task::block_in_place(|| Postgres::create(dir));
        let standby = tokio::task::block_in_place(|| Postgres::synchronous_standby(&primary, dir, "pg-standby-1"));
        let db_proxy = Forwarder::start(primary.port).await;
        let cluster = RabbitCluster::create(dir).await;
        let mut broker_proxies = Vec::new();
        for i in 0..3 {
            let node: std::net::IpAddr = RabbitCluster::address(i).parse()?;
            broker_proxies.push(Forwarder::start_to((node, cluster.ports[i]).into()).await);
        }
        let amqp_url = format!(
            "amqp://guest:guest@{}/%2f",
            broker_proxies.iter().map(|p| format!("127.0.0.1:{}", p.port)).collect::<Vec<_>>().join(",")
        );
        let smtp = SmtpServer::start().await;

        let inventory_ports: Vec<u16> = (0..INSTANCES).map(|_| free_port()).collect();
        let gateway_ports: Vec<u16> = (0..INSTANCES).map(|_| free_port()).collect();
        let inventory_urls: Vec<String> = inventory_ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
        let mut env: BTreeMap<String, String> = [
            ("RUST_LOG", "info,sqlx=warn,h2=warn,lapin=warn"),
            ("GATEWAY_AUTH", "required"),
            ("INVENTORY_AUTH", "required"),
            // Shorter than the defaults where a default only makes a test wait: how often idle workers look.
            ("CHECKOUT_POLL_MS", "100"),
            ("CART_OUTBOX_POLL_MS", "100"),
            ("INVENTORY_SWEEP_INTERVAL_MS", "500"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.insert("AMQP_URL".into(), amqp_url);
        env.insert("INVENTORY_URL".into(), inventory_urls.join(","));
        env.insert("SMTP_URL".into(), smtp.url());
        for (prefix, db) in DATABASES {
            env.insert(format!("{prefix}_DATABASE_URL"), db_proxy.url(&format!("ordermesh_{db}")));
            env.insert(format!("{prefix}_METRICS_ADDR"), "127.0.0.1:0".into());
        }

        // Inventory's tokens, registered from files as a deployment's secrets would be: the services read
        // theirs through INVENTORY_TOKEN_FILE; the nemesis keeps the operator's for the catalogue.
        let service_token = dir.join("inventory-service-token");
        std::fs::write(
            &service_token,
            format!("svc-{}{}\n", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()),
        )?;
        let operator_token = format!("op-{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let operator_file = dir.join("inventory-operator-token");
        std::fs::write(&operator_file, &operator_token)?;
        for (role, file) in [("service", &service_token), ("operator", &operator_file)] {
            let out = tokio::process::Command::new(binaries.join("ordermesh"))
                .args(["tokens", "register", "--role", role, "--token-file"])
                .arg(file)
                .args(["--note", "nemesis"])
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .envs(&env)
                .output()
                .await
                .context("running ordermesh tokens register")?;
            if !out.status.success() {
                bail!("ordermesh tokens register failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        env.insert("INVENTORY_TOKEN_FILE".into(), service_token.display().to_string());

        let mut instances = Vec::new();
        for number in 1..=INSTANCES {
            for service in SERVICES {
                let clock = dir.join(format!("clock-{service}-{number}"));
                std::fs::write(&clock, "+0s")?;
                let mut settings = env.clone();
                settings.insert("INVENTORY_LISTEN_ADDR".into(), format!("127.0.0.1:{}", inventory_ports[number - 1]));
                settings.insert("GATEWAY_LISTEN_ADDR".into(), format!("127.0.0.1:{}", gateway_ports[number - 1]));
                settings.insert("LD_PRELOAD".into(), FAKETIME.into());
                settings.insert("FAKETIME_TIMESTAMP_FILE".into(), clock.display().to_string());
                settings.insert("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into());
                settings.insert("FAKETIME_CACHE_DURATION".into(), "1".into());
                let mut process = Service::instance(service, number, binaries, settings, dir);
                process.start();
                instances.push(Instance { service, number, process: Mutex::new(process), clock });
                // Each first instance creates its database and runs its migrations before its twin starts.
                if number == 1 && service == "inventory-manager" {
                    wait_for_port(inventory_ports[0], Duration::from_secs(60), "inventory-manager").await;
                }
            }
            if number == 1 {
                wait_for_port(gateway_ports[0], Duration::from_secs(60), "api-gateway").await;
            }
        }
        for port in inventory_ports.iter().chain(&gateway_ports) {
            wait_for_port(*port, Duration::from_secs(60), "a listener").await;
        }
        let gateways: Vec<String> = gateway_ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
        let http = reqwest::Client::new();
        for gateway in &gateways {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !http.get(format!("{gateway}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
                if Instant::now() > deadline {
                    bail!("{gateway} was not ready within 60 s (logs in {})", dir.display());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let database = Mutex::new(Database { primary, standby: Some(standby), built: 1, retired: Vec::new() });
        Ok(Self {
            dir: dir.to_owned(),
            cluster,
            broker_proxies,
            database,
            db_proxy,
            instances,
            gateways,
            inventory_urls,
            smtp,
            env,
            binaries: binaries.to_owned(),
            operator_token,
        })
    }

    /// Puts the catalogue on hand (at the start, before any shopper).
    pub async fn seed(&self) -> anyhow::Result<()> {
        for (id, price_cents, on_hand) in CATALOGUE {
            self.upsert(id, *price_cents, *on_hand).await?;
        }
        Ok(())
    }

    /// Sets a product's price and units on hand through any inventory instance that answers.
    pub async fn upsert(&self, id: &str, price_cents: i64, on_hand: i64) -> anyhow::Result<()> {
        let mut last = None;
        for url in &self.inventory_urls {
            let request =
                pb::UpsertProductRequest { product_id: id.into(), name: format!("Product {id}"), price_cents, on_hand };
            let attempt = async {
                let mut client =
                    pb::lazy_client(url, Duration::from_secs(5), Some(&self.operator_token), &Default::default())
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                client.upsert_product(request).await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(anyhow::anyhow!("{url} did not answer within 5 s")),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no inventory instance")))
    }

    /// A shopper key per channel, made with `ordermesh keys create` as an operator would.
    pub async fn shopper_keys(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut keys = Vec::new();
        for channel in CHANNELS {
            let out = tokio::process::Command::new(self.binaries.join("ordermesh"))
                .args(["keys", "create", "--role", "shopper", "--channel", channel, "--rate", "1000"])
                .args(["--note", "nemesis shoppers"])
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .envs(&self.env)
                .output()
                .await
                .context("running ordermesh keys create")?;
            let text = String::from_utf8_lossy(&out.stdout);
            let key = text.lines().nth(1).filter(|_| out.status.success()).map(str::trim).map(str::to_owned);
            let Some(key) = key else {
                bail!("ordermesh keys create failed: {text}{}", String::from_utf8_lossy(&out.stderr));
            };
            keys.push((channel.to_owned(), key));
        }
        Ok(keys)
    }

    /// A connection string to one of the services' databases on the current primary, directly (not through
    /// the proxy, which the nemesis slows and cuts).
    pub async fn direct_url(&self, database: &str) -> String {
        let port = self.database.lock().await.primary.port;
        format!("postgres://postgres@127.0.0.1:{port}/ordermesh_{database}")
    }

    /// Runs `ordermesh audit` against the mesh's databases and broker: whether it was clean, and its report.
    pub async fn audit(&self, stuck_after: Duration) -> (bool, String) {
        match infra::audit(&self.binaries.join("ordermesh"), &self.env, stuck_after).await {
            Ok(report) => (true, report),
            Err(report) => (false, report),
        }
    }

    /// The instances of `service`.
    pub fn of(&self, service: &str) -> impl Iterator<Item = &Instance> {
        self.instances.iter().filter(move |i| i.service == service)
    }
}
