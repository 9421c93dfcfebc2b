//! Downstream failures answer fast with 503/504; duplicates act once; poison goes to the dead-letter queue.

use std::time::{Duration, Instant};

use ordermesh_bus::Topology;
use ordermesh_messages::{
    ClientId, Envelope, OrderId, ProductId, kinds,
    payloads::{Checkout, OrderLine, PlaceOrder},
};
use serde_json::json;

use crate::helpers::{Options, spawn_mesh, spawn_mesh_with};

/// Puts `body` on `queue` of the machine's RabbitMQ as it is.
pub async fn publish_raw(queue: &str, body: &[u8]) {
    ordermesh_testkit::amqp::publish_raw(ordermesh_bus::DEFAULT_AMQP_URL, queue, body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_worker_is_a_504_within_the_deadline_not_a_hang() {
    let mesh =
        spawn_mesh_with(Options { carts: 0, request_timeout: Duration::from_secs(1), ..Default::default() }).await;
    mesh.product("mug", 100, 5).await;
    let started = Instant::now();
    let (status, body) = mesh.add("gus", "mug", 1).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["status"], "failure");
    assert!(started.elapsed() < Duration::from_secs(4), "answered in {:?}", started.elapsed());
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_inventory_is_a_503() {
    let mesh =
        spawn_mesh_with(Options { inventory_url: Some("http://127.0.0.1:1".into()), ..Default::default() }).await;
    let (status, body) = mesh.add("hal", "mug", 1).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "failure");
    let (status, body) = mesh.get("/products").await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = mesh.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["inventory"], false);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_a_503_and_the_gateway_stays_alive() {
    let mesh = spawn_mesh_with(Options {
        gateway_amqp_url: Some("amqp://guest:guest@127.0.0.1:1/%2f".into()),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let (status, body) = mesh.add("ian", "mug", 1).await;
    assert_eq!(status, 503, "{body}");
    assert!(started.elapsed() < Duration::from_secs(4), "answered in {:?}", started.elapsed());
    let (status, body) = mesh.post(0, "/checkOutCart", json!({"clientID": "ian"})).await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = mesh.get("/readyz").await;
    assert_eq!((status, body["rabbitmq"].clone()), (503, json!(false)));
    assert_eq!(mesh.get("/healthz").await.0, 200, "alive even while not ready");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_checkout_delivered_twice_makes_one_order_one_reservation_one_charge() {
    let mesh = spawn_mesh().await;
    mesh.product("mug", 700, 10).await;
    assert_eq!(mesh.add("jo", "mug", 3).await.0, 200);

    // The very same job message, delivered twice (as after a worker crash before its ack).
    let job = Envelope::new(
        kinds::CART_CHECKOUT,
        &Checkout {
            client_id: ClientId::parse("jo").unwrap(),
            idempotency_key: "request:dup".into(),
            channel: Default::default(),
        },
    );
    publish_raw(&mesh.topology.cart_jobs(), &job.to_vec()).await;
    publish_raw(&mesh.topology.cart_jobs(), &job.to_vec()).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let order_id: String = loop {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT order_id, status FROM orders WHERE client_id = 'jo'")
                .fetch_optional(&mesh.checkout_db)
                .await
                .unwrap();
        if let Some((id, status)) = row
            && status == "CONFIRMED"
        {
            break id;
        }
        assert!(Instant::now() < deadline, "no confirmed order");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Every copy of the job has been handled (delivered and acked) before counting.
    mesh.wait_until_drained(&mesh.topology.cart_jobs()).await;
    mesh.wait_until_drained(&mesh.topology.checkout_jobs()).await;
    assert_eq!(mesh.count("SELECT count(*) FROM orders WHERE client_id = $1", "jo").await, 1);
    assert_eq!(mesh.count_payments("SELECT count(*) FROM payment_charges WHERE client_id = $1", "jo").await, 1);
    assert_eq!(mesh.stock("mug").await, (7, 0, 7), "one reservation, committed once");

    // The order hand-off delivered twice, too.
    let again = PlaceOrder {
        order_id: OrderId::parse(order_id.clone()).unwrap(),
        client_id: ClientId::parse("jo").unwrap(),
        lines: vec![OrderLine { product_id: ProductId::parse("mug").unwrap(), quantity: 3, unit_price_cents: 700 }],
        total_cents: 2100,
        created_at: chrono::Utc::now(),
        channel: ordermesh_messages::Channel::parse("phone").unwrap(),
    };
    publish_raw(&mesh.topology.checkout_jobs(), &Envelope::new(kinds::ORDER_PLACE, &again).to_vec()).await;
    mesh.wait_until_drained(&mesh.topology.checkout_jobs()).await;
    mesh.wait_until_drained(&mesh.topology.payment_requests()).await;
    assert_eq!(mesh.count_payments("SELECT count(*) FROM payment_charges WHERE client_id = $1", "jo").await, 1);
    assert_eq!(mesh.stock("mug").await, (7, 0, 7));
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_returns_the_same_order() {
    let mesh = spawn_mesh().await;
    mesh.product("mug", 100, 10).await;
    assert_eq!(mesh.add("kim", "mug", 1).await.0, 200);
    let post = || {
        mesh.http
            .post(mesh.url("/checkOutCart"))
            .header("Idempotency-Key", "checkout-kim-1")
            .json(&json!({"clientID": "kim"}))
            .send()
    };
    let first: serde_json::Value = post().await.unwrap().json().await.unwrap();
    let second = post().await.unwrap();
    assert_eq!(second.status().as_u16(), 202, "a retry is accepted again, not 'empty cart'");
    let second: serde_json::Value = second.json().await.unwrap();
    assert_eq!(first["orderID"], second["orderID"]);
    mesh.final_order(first["orderID"].as_str().unwrap()).await;
    assert_eq!(mesh.count("SELECT count(*) FROM orders WHERE client_id = $1", "kim").await, 1);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_queue_with_their_reason() {
    let mesh = spawn_mesh().await;
    publish_raw(&mesh.topology.cart_jobs(), b"this is not json").await;
    publish_raw(&mesh.topology.checkout_jobs(), &Envelope::new("order.teleport", &json!({})).to_vec()).await;

    for (queue, needle) in
        [(mesh.topology.cart_jobs(), "not a valid envelope"), (mesh.topology.checkout_jobs(), "unknown message type")]
    {
        let dlq = Topology::dead_letter_queue(&queue);
        let conn = lapin::Connection::connect(ordermesh_bus::DEFAULT_AMQP_URL, Default::default()).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let message = loop {
            if let Some(m) = channel.basic_get(dlq.as_str().into(), Default::default()).await.unwrap() {
                break m;
            }
            assert!(Instant::now() < deadline, "nothing in {dlq}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let headers = message.delivery.properties.headers().clone().unwrap_or_default();
        let reason = match headers.inner().get("x-ordermesh-reason") {
            Some(lapin::types::AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            other => format!("{other:?}"),
        };
        assert!(reason.contains(needle), "{dlq}: reason {reason:?}");
        let _ = conn.close(200, "ok".into()).await;
    }
    mesh.stop().await;
}

/// A TCP forwarder to the real broker that the test can start late and cut, as a broker start or restart looks to a client.
pub struct BrokerLink {
    /// The port services connect to.
    pub port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl BrokerLink {
    /// A link on a free port, down until `up`.
    pub fn new() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self { port, task: None }
    }

    /// Starts forwarding (the broker "accepts connections again").
    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.task = Some(tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                links.spawn(async move {
                    if let Ok(mut broker) = tokio::net::TcpStream::connect("127.0.0.1:5672").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                    }
                });
            }
        }));
    }

    /// Stops listening and cuts every open connection (the JoinSet aborts its tasks when dropped).
    pub fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn ready_within(mesh: &crate::helpers::TestMesh, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if mesh.get("/readyz").await.1["rabbitmq"] == true {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_connects_when_the_broker_comes_up_late_and_again_after_it_drops() {
    let mut link = BrokerLink::new();
    let mesh = spawn_mesh_with(Options {
        gateway_amqp_url: Some(format!("amqp://guest:guest@127.0.0.1:{}/%2f", link.port)),
        ..Default::default()
    })
    .await;
    mesh.product("mug", 100, 10).await;
    assert_eq!(mesh.add("lee", "mug", 1).await.0, 503, "no broker yet");

    link.up().await;
    assert!(ready_within(&mesh, 15).await, "connected once the broker is reachable");
    assert_eq!(mesh.add("lee", "mug", 1).await.0, 200);

    link.down();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = mesh.add("lee", "mug", 1).await;
        if status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "still {status} {body} after the link was cut");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    link.up().await;
    assert!(ready_within(&mesh, 15).await, "reconnected after the broker came back");
    assert_eq!(mesh.add("lee", "mug", 1).await.0, 200);
    let order = mesh.final_order(&mesh.checkout("lee").await).await;
    assert_eq!(order["status"], "CONFIRMED");
    link.down();
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_that_accepts_connections_and_never_answers_is_a_fast_503_not_a_hang() {
    // A black hole: connections are accepted and held, nothing is ever answered.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mesh = spawn_mesh_with(Options {
        inventory_url: Some(format!("http://127.0.0.1:{port}")),
        request_timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let (status, body) = mesh.add("ivy", "mug", 1).await;
    // The workers' gRPC deadlines (500 ms here: the connect, HTTP/2 handshake included, and the call)
    // cut it, well before the gateway's own 5 s deadline would answer 504.
    assert_eq!(status, 503, "{body}");
    assert!(started.elapsed() < Duration::from_secs(3), "answered after {:?}", started.elapsed());
    assert!(!body["error"].as_str().unwrap().contains("127.0.0.1"), "internal detail leaked: {body}");
    mesh.stop().await;
    hole.abort();
}
