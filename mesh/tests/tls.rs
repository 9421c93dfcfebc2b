//! TLS on every hop, end to end: a private CA made at test time (rcgen), a private RabbitMQ node that speaks
//! only AMQPS, a private PostgreSQL that refuses every connection without TLS, inventory-manager serving
//! TLS with mutual TLS required, and the gateway serving HTTPS; the whole mesh (`ordermesh`, its real binary)
//! runs on them and an order goes through. Then at each hop a client that does not trust the CA is refused,
//! and inventory refuses a client without a certificate. A certificate that is missing or expired stops a
//! service at start with a sentence naming its variable.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use ordermesh_nemesis::infra::{Postgres, Rabbit, free_port};
use ordermesh_proto::inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A certificate authority of the test's own, writing what it issues into `dir`.
struct Pki {
    dir: PathBuf,
    name: &'static str,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(dir: &Path, name: &'static str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("ordermesh test CA {name}"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), ca.pem()).unwrap();
        Self { dir: dir.to_owned(), name, ca }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate for `sans` (a server's names, or a client's), and its key: (cert file, key file).
    fn issue(&self, file: &str, sans: &[&str], client: bool) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, sans[0]);
        params.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_file, key_file) = (self.dir.join(format!("{file}.pem")), self.dir.join(format!("{file}.key")));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The workspace's binary `name`, next to this test's `ordermesh`.
fn binary(name: &str) -> PathBuf {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_ordermesh")).with_file_name(name);
    assert!(binary.exists(), "{} is not built: run the README's test command (scripts/test)", binary.display());
    binary
}

/// A gRPC endpoint of inventory at `port`, verifying it against `ca` and presenting `identity` if given.
async fn inventory_channel(
    port: u16,
    ca: &str,
    identity: Option<(&Path, &Path)>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("127.0.0.1");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(std::fs::read(cert).unwrap(), std::fs::read(key).unwrap()));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// `GetProduct` of `mug` over `channel`: an error if the connection or the call failed.
async fn read_mug(channel: Result<tonic::transport::Channel, tonic::transport::Error>) -> Result<(), tonic::Status> {
    let channel = channel.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    InventoryServiceClient::new(channel)
        .get_product(pb::GetProductRequest { product_id: "mug".into() })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_runs_with_tls_on_every_hop_and_each_hop_refuses_a_client_that_does_not_trust_it() {
    ordermesh_testkit::watchdog::arm(Duration::from_secs(600));
    ordermesh_nemesis::infra::require_root("this test starts a private PostgreSQL (as user postgres) and");
    let dir = std::env::temp_dir().join(format!("om-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let pki = Pki::new(&dir, "mesh");
    let stranger = Pki::new(&dir, "stranger");
    let server_names = ["localhost", "127.0.0.1"];
    let (rabbit_cert, rabbit_key) = pki.issue("rabbitmq", &server_names, false);
    let (pg_cert, pg_key) = pki.issue("postgres", &server_names, false);
    let (inventory_cert, inventory_key) = pki.issue("inventory", &server_names, false);
    let (gateway_cert, gateway_key) = pki.issue("gateway", &server_names, false);
    let (service_cert, service_key) = pki.issue("mesh-services", &["mesh-services"], true);
    let (stranger_cert, stranger_key) = stranger.issue("stranger-client", &["stranger"], true);

    let postgres = tokio::task::block_in_place(|| {
        let pg = Postgres::create(&dir);
        pg.require_tls(&std::fs::read_to_string(&pg_cert).unwrap(), &std::fs::read_to_string(&pg_key).unwrap());
        pg
    });
    let rabbit = Rabbit::create_tls(&dir, &pki.ca_file(), &rabbit_cert, &rabbit_key).await;
    let smtp = ordermesh_testkit::smtp::SmtpServer::start().await;

    let ca = path(&pki.ca_file());
    let amqp = |ca: Option<&Path>| {
        let query = ca.map(|ca| format!("?cacertfile={}", ca.display())).unwrap_or_default();
        format!("amqps://guest:guest@127.0.0.1:{}/%2f{query}", rabbit.port)
    };
    let db_url = |db: &str, params: &str| format!("postgres://postgres@127.0.0.1:{}/{db}?{params}", postgres.port);
    let (inventory_port, gateway_port) = (free_port(), free_port());
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("RUST_LOG".into(), "warn".into());
    env.insert("AMQP_URL".into(), amqp(Some(&pki.ca_file())));
    env.insert("SMTP_URL".into(), smtp.url());
    for (prefix, db) in ordermesh_nemesis::deployment::DATABASES {
        env.insert(
            format!("{prefix}_DATABASE_URL"),
            db_url(&format!("ordermesh_{db}"), &format!("sslmode=verify-full&sslrootcert={ca}")),
        );
        env.insert(format!("{prefix}_METRICS_ADDR"), "127.0.0.1:0".into());
    }
    for (key, value) in [
        ("INVENTORY_LISTEN_ADDR", format!("127.0.0.1:{inventory_port}")),
        ("INVENTORY_URL", format!("https://127.0.0.1:{inventory_port}")),
        ("INVENTORY_TLS_CERT_FILE", path(&inventory_cert)),
        ("INVENTORY_TLS_KEY_FILE", path(&inventory_key)),
        // Mutual TLS: every client of inventory shows a certificate of the mesh's CA, which is its credential.
        ("INVENTORY_TLS_CLIENT_CA_FILE", ca.clone()),
        ("INVENTORY_AUTH", "required".into()),
        ("INVENTORY_CA_FILE", ca.clone()),
        ("INVENTORY_CLIENT_CERT_FILE", path(&service_cert)),
        ("INVENTORY_CLIENT_KEY_FILE", path(&service_key)),
        ("GATEWAY_LISTEN_ADDR", format!("127.0.0.1:{gateway_port}")),
        ("GATEWAY_TLS_CERT_FILE", path(&gateway_cert)),
        ("GATEWAY_TLS_KEY_FILE", path(&gateway_key)),
    ] {
        env.insert(key.into(), value);
    }
    let log = std::fs::File::create(dir.join("mesh.log")).unwrap();
    let mut mesh = tokio::process::Command::new(env!("CARGO_BIN_EXE_ordermesh"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(&env)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("ordermesh starts");

    // The shopper trusts the mesh's CA, and nothing else.
    let gateway = format!("https://localhost:{gateway_port}");
    let shopper = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ready = shopper.get(format!("{gateway}/readyz")).send().await;
        if ready.as_ref().is_ok_and(|r| r.status().is_success()) {
            break;
        }
        if let Ok(Some(status)) = mesh.try_wait() {
            panic!("ordermesh exited ({status}): {}", std::fs::read_to_string(dir.join("mesh.log")).unwrap());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mesh was not ready over TLS within 120 s ({ready:?}): {}",
            std::fs::read_to_string(dir.join("mesh.log")).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // An order through every hop: HTTPS, AMQPS, PostgreSQL over TLS, gRPC with mutual TLS.
    let add = shopper
        .post(format!("{gateway}/addToCart"))
        .json(&json!({"clientID": "tls", "productID": "mug", "quantity": 2}));
    let added = add.send().await.unwrap();
    assert_eq!(added.status().as_u16(), 200, "{:?}", added.text().await);
    let checkout =
        shopper.post(format!("{gateway}/checkOutCart")).json(&json!({"clientID": "tls"})).send().await.unwrap();
    assert_eq!(checkout.status().as_u16(), 202);
    let order: Value = checkout.json().await.unwrap();
    let order_id = order["orderID"].as_str().unwrap().to_owned();
    let done: Value =
        shopper.get(format!("{gateway}/orders/{order_id}?waitSeconds=15")).send().await.unwrap().json().await.unwrap();
    assert_eq!(done["status"], "CONFIRMED", "{done}");

    // The gateway: a client that trusts only the public web's roots, or speaks plain HTTP, gets nothing.
    let public_roots = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let refused = public_roots.get(format!("{gateway}/healthz")).send().await;
    assert!(refused.is_err(), "the gateway's certificate was trusted without its CA: {refused:?}");
    let plain = public_roots.get(format!("http://127.0.0.1:{gateway_port}/healthz")).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success(), "the gateway answered plain HTTP");

    // Inventory: the wrong CA is refused; without a client certificate the handshake fails (mutual TLS); a
    // certificate of another CA fails too. The services' certificate may reserve and read, not set stock.
    assert!(inventory_channel(inventory_port, &stranger.ca_pem(), Some((&service_cert, &service_key))).await.is_err());
    let without_cert = read_mug(inventory_channel(inventory_port, &pki.ca_pem(), None).await).await;
    assert!(without_cert.is_err(), "inventory served a client without a certificate");
    let foreign =
        read_mug(inventory_channel(inventory_port, &pki.ca_pem(), Some((&stranger_cert, &stranger_key))).await).await;
    assert!(foreign.is_err(), "inventory served a client whose certificate another CA signed");
    let mut service = InventoryServiceClient::new(
        inventory_channel(inventory_port, &pki.ca_pem(), Some((&service_cert, &service_key)))
            .await
            .expect("mutual TLS"),
    );
    let mug = service.get_product(pb::GetProductRequest { product_id: "mug".into() }).await.expect("a service reads");
    assert_eq!(mug.into_inner().reserved, 0);
    let upsert = pb::UpsertProductRequest { product_id: "mug".into(), name: "Mug".into(), price_cents: 1, on_hand: 0 };
    let status = service.upsert_product(upsert).await.expect_err("a service's certificate set a price");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // RabbitMQ: without the CA (the public roots), with another CA, and in plain AMQP, no connection.
    for url in
        [amqp(None), amqp(Some(&stranger.ca_file())), format!("amqp://guest:guest@127.0.0.1:{}/%2f", rabbit.port)]
    {
        let connected = ordermesh_bus::connection::connect_first(&url).await;
        assert!(connected.is_err(), "RabbitMQ accepted {url}");
    }
    let trusted =
        ordermesh_bus::connection::connect_first(&amqp(Some(&pki.ca_file()))).await.expect("AMQPS with the CA");
    let _ = trusted.close(200, "checked".into()).await;

    // PostgreSQL: verified against another CA, or without TLS, no session.
    let stranger_ca = path(&stranger.ca_file());
    for params in [format!("sslmode=verify-full&sslrootcert={stranger_ca}"), "sslmode=disable".to_owned()] {
        let url = db_url("ordermesh_inventory", &params);
        let session = sqlx::PgPool::connect(&url).await;
        assert!(session.is_err(), "PostgreSQL accepted {params}");
    }
    let trusted =
        sqlx::PgPool::connect(&db_url("ordermesh_inventory", &format!("sslmode=verify-full&sslrootcert={ca}")))
            .await
            .expect("PostgreSQL with TLS and the CA");
    trusted.close().await;

    let _ = mesh.kill().await;
    drop(rabbit);
    drop(postgres);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_missing_or_expired_certificate_stops_a_service_at_start_naming_its_variable() {
    let dir = std::env::temp_dir().join(format!("om-tls-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut old = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    old.not_before = rcgen::date_time_ymd(2020, 1, 1);
    old.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let (expired, key_file) = (dir.join("expired.pem"), dir.join("key.pem"));
    std::fs::write(&expired, old.self_signed(&key).unwrap().pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let missing = dir.join("missing.pem");

    for (binary_name, cert_var, key_var, cert, expected) in [
        ("inventory-manager", "INVENTORY_TLS_CERT_FILE", "INVENTORY_TLS_KEY_FILE", &missing, "cannot be read"),
        ("inventory-manager", "INVENTORY_TLS_CERT_FILE", "INVENTORY_TLS_KEY_FILE", &expired, "not valid now"),
        ("api-gateway", "GATEWAY_TLS_CERT_FILE", "GATEWAY_TLS_KEY_FILE", &expired, "not valid now"),
        ("cart-manager", "INVENTORY_CLIENT_CERT_FILE", "INVENTORY_CLIENT_KEY_FILE", &missing, "cannot be read"),
    ] {
        let out = tokio::process::Command::new(binary(binary_name))
            .env(cert_var, cert)
            .env(key_var, &key_file)
            .env("RUST_LOG", "error")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), out).await.expect("it stops at once").unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{binary_name} started with {cert_var}={}", cert.display());
        assert!(stderr.contains(cert_var) && stderr.contains(expected), "{binary_name}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("PRIVATE KEY"), "{binary_name}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
