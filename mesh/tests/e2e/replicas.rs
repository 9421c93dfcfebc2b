//! Inventory replicas balanced per call: three inventory-manager processes (their real binary) on one
//! database, the mesh given all three addresses. Each takes a share of the calls; one killed with SIGKILL
//! leaves the rotation without a failed add or checkout, and the other two take its calls.

use std::{path::PathBuf, process::Stdio, time::Duration};

use ordermesh_proto::inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient};
use ordermesh_testkit::testdb;

use crate::helpers::{Options, TestMesh, spawn_mesh_with};

const DB_PREFIX: &str = "om_test_replicas_";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One inventory-manager process.
struct Replica {
    grpc: u16,
    metrics: u16,
    child: tokio::process::Child,
}

impl Replica {
    fn start(database_url: &str) -> Self {
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_ordermesh")).with_file_name("inventory-manager");
        assert!(binary.exists(), "{} is not built: run the README's test command (scripts/test)", binary.display());
        let (grpc, metrics) = (free_port(), free_port());
        let child = tokio::process::Command::new(binary)
            .env("INVENTORY_DATABASE_URL", database_url)
            .env("INVENTORY_LISTEN_ADDR", format!("127.0.0.1:{grpc}"))
            .env("INVENTORY_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
            .env("RUST_LOG", "warn")
            // Balancing is the point here; inventory's tokens have their own tests.
            .env("INVENTORY_AUTH", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("inventory-manager starts");
        Self { grpc, metrics, child }
    }

    async fn wait_until_serving(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.grpc)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "inventory-manager on {} did not listen", self.grpc);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Calls this replica has served, of every method (the sum of `grpc_server_handled_total`).
    async fn served(&self, http: &reqwest::Client) -> f64 {
        let text =
            http.get(format!("http://127.0.0.1:{}/metrics", self.metrics)).send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with("grpc_server_handled_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// `n` shoppers at once, each adding one unit of `product` and checking out; every add must answer 200
/// and every order end CONFIRMED.
async fn shop(mesh: &TestMesh, tag: &str, n: usize, product: &str) {
    let shoppers = (0..n).map(|i| async move {
        let client = format!("{tag}-{i}");
        let (status, body) = mesh.add(&client, product, 1).await;
        assert_eq!(status, 200, "{client}'s add failed: {body}");
        let order = mesh.checkout(&client).await;
        let done = mesh.final_order(&order).await;
        assert_eq!(done["status"], "CONFIRMED", "{client}: {done}");
    });
    futures::future::join_all(shoppers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_inventory_replica_takes_a_share_of_the_calls_and_a_killed_one_fails_no_checkout() {
    ordermesh_testkit::watchdog::arm(crate::helpers::TEST_LIMIT);
    let (database_url, database) = testdb::unique_database(DB_PREFIX);
    let mut replicas = vec![Replica::start(&database_url)];
    // The first one creates and migrates the database; the others start on it.
    replicas[0].wait_until_serving().await;
    replicas.push(Replica::start(&database_url));
    replicas.push(Replica::start(&database_url));
    for replica in &replicas[1..] {
        replica.wait_until_serving().await;
    }
    let urls: Vec<String> = replicas.iter().map(|r| format!("http://127.0.0.1:{}", r.grpc)).collect();
    let mut catalogue = InventoryServiceClient::connect(urls[0].clone()).await.unwrap();
    catalogue
        .upsert_product(pb::UpsertProductRequest {
            product_id: "replicated".into(),
            name: "Replicated".into(),
            price_cents: 500,
            on_hand: 1_000,
        })
        .await
        .unwrap();

    let mesh = spawn_mesh_with(Options { inventory_url: Some(urls.join(",")), ..Default::default() }).await;
    let http = reqwest::Client::new();
    shop(&mesh, "before", 30, "replicated").await;
    let before: Vec<f64> = futures::future::join_all(replicas.iter().map(|r| r.served(&http))).await;
    let total: f64 = before.iter().sum();
    // 30 adds, checkouts and their reservations and commits: well over 100 calls, spread per call.
    assert!(total >= 90.0, "the replicas served {total} calls: {before:?}");
    for (i, served) in before.iter().enumerate() {
        assert!(*served >= total / 10.0, "replica {i} served {served} of {total} calls: {before:?}");
    }

    // SIGKILL of one replica while shoppers keep coming: no add and no checkout fails.
    let killed = replicas.remove(1);
    let mut child = killed.child;
    let stream = shop(&mesh, "during", 30, "replicated");
    let kill = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        child.start_kill().unwrap();
        let _ = child.wait().await;
    };
    tokio::join!(stream, kill);
    shop(&mesh, "after", 30, "replicated").await;
    let after: Vec<f64> = futures::future::join_all(replicas.iter().map(|r| r.served(&http))).await;
    let survivors_before = [before[0], before[2]];
    for (i, (b, a)) in survivors_before.iter().zip(&after).enumerate() {
        assert!(a - b >= 30.0, "survivor {i} took {} more calls ({b} -> {a})", a - b);
    }
    let stock = catalogue
        .get_available_quantity(pb::GetAvailableQuantityRequest { product_id: "replicated".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stock.on_hand, stock.reserved), (1_000 - 90, 0), "every order sold exactly one unit: {stock:?}");

    mesh.stop().await;
    drop(replicas);
    testdb::drop_database(&database).await;
}
