//! The gateway's router without a socket or a broker: `app(state).oneshot(request)` with the workers' replies
//! scripted behind `Requests`. Each behaviour the end-to-end tests also check (status mapping, shedding, the
//! key check, the `Idempotency-Key` riding with the job, `waitSeconds`) here at its fastest; the waits run on
//! tokio's paused clock, so five seconds of waiting take milliseconds.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use api_gateway::{
    auth::Auth,
    routes::{AppState, app},
    waiters::Waiters,
};
use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
};
use chrono::Utc;
use futures::future::BoxFuture;
use ordermesh_bus::{Bus, Requests, RpcError, Topology};
use ordermesh_config::{AuthMode, SharedSettings};
use ordermesh_messages::{
    Channel, ClientId, Envelope, ErrorCode, OrderId, ReplyError, kinds,
    payloads::{AddItem, ItemAdded, OrderView},
};
use ordermesh_proto::InventoryClient;
use ordermesh_telemetry::Metrics;
use serde::Serialize;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Permits of the workers' hold: taking them all holds every call.
const HOLD_PERMITS: u32 = 1 << 20;

/// A worker's scripted answer to one request.
type Answer = Result<Envelope, RpcError>;

/// The workers, as the router sees them: each request is recorded and answered from the script in order
/// (a default answer when the script is empty); `hold` makes every call wait until released.
#[derive(Debug)]
struct Workers {
    script: Mutex<VecDeque<Answer>>,
    default: Mutex<Option<Answer>>,
    asked: Mutex<Vec<Envelope>>,
    hold: tokio::sync::Semaphore,
}

impl Workers {
    fn answering(default: Answer) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::default(),
            default: Mutex::new(Some(default)),
            asked: Mutex::default(),
            hold: tokio::sync::Semaphore::new(HOLD_PERMITS as usize),
        })
    }

    fn then(&self, answer: Answer) {
        self.script.lock().unwrap().push_back(answer);
    }

    fn asked(&self) -> Vec<Envelope> {
        self.asked.lock().unwrap().clone()
    }
}

impl Requests for Workers {
    fn call<'a>(&'a self, _queue: &'a str, request: Envelope, _deadline: Duration) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            self.asked.lock().unwrap().push(request);
            let _held = self.hold.acquire().await.expect("the hold is never closed");
            let scripted = self.script.lock().unwrap().pop_front();
            scripted.unwrap_or_else(|| self.default.lock().unwrap().clone().expect("an answer for every call"))
        })
    }
}

/// A reply carrying `result`, as a worker sends it.
fn reply<T: Serialize>(result: Result<T, ReplyError>) -> Answer {
    Ok(Envelope::new(kinds::REPLY, &result))
}

fn added(quantity_in_cart: i64) -> Answer {
    reply::<ItemAdded>(Ok(ItemAdded { quantity_in_cart }))
}

fn refused(code: ErrorCode, message: &str) -> Answer {
    reply::<ItemAdded>(Err(ReplyError::new(code, message)))
}

fn state(workers: Arc<Workers>, auth: AuthMode, max_in_flight: usize) -> AppState {
    let metrics = Metrics::new("api-gateway-test");
    let topology = Topology::new("router-test");
    // Never dialled by these tests: the catalogue and readiness are the end-to-end tests' business.
    let shared = SharedSettings { inventory_url: "http://127.0.0.1:1".into(), ..SharedSettings::default() };
    AppState {
        rpc: workers,
        bus: Bus::detached(topology.clone(), metrics.clone()),
        topology,
        inventory: InventoryClient::new(&shared, Duration::from_secs(1), metrics.clone()).expect("a lazy client"),
        request_timeout: Duration::from_secs(5),
        max_wait: Duration::from_secs(10),
        wait_poll: Duration::from_secs(1),
        waiters: Arc::new(Waiters::default()),
        max_in_flight,
        max_waiting: 64,
        max_open_orders: 32,
        metrics,
        auth: Arc::new(Auth::new(auth, None, 100, Duration::from_secs(3600))),
    }
}

fn add_to_cart(body: Value) -> Request<Body> {
    Request::post("/addToCart")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// The router of `state`, built once as the gateway builds it (its admission limits live in it), answering one
/// request.
async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Value, Option<String>) {
    let response = router.clone().oneshot(request).await.expect("the router answers");
    let status = response.status();
    let retry_after = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), retry_after)
}

fn an_add() -> Value {
    json!({"clientID": "ada", "productID": "mug", "quantity": 2})
}

#[tokio::test]
async fn each_worker_answer_and_each_silence_has_its_status() {
    let workers = Workers::answering(added(2));
    let state = state(workers.clone(), AuthMode::Off, 32);
    let router = app(state.clone());
    for (answer, status) in [
        (added(2), StatusCode::OK),
        (refused(ErrorCode::InvalidInput, "quantity"), StatusCode::BAD_REQUEST),
        (refused(ErrorCode::NotFound, "unknown product mug"), StatusCode::NOT_FOUND),
        (refused(ErrorCode::Conflict, "not enough stock"), StatusCode::CONFLICT),
        (refused(ErrorCode::KeyReused, "key reused"), StatusCode::UNPROCESSABLE_ENTITY),
        (refused(ErrorCode::Unavailable, "inventory down"), StatusCode::SERVICE_UNAVAILABLE),
        (Err(RpcError::Unavailable), StatusCode::SERVICE_UNAVAILABLE),
        (Err(RpcError::Timeout), StatusCode::GATEWAY_TIMEOUT),
    ] {
        workers.then(answer.clone());
        let (got, body, _) = send(&router, add_to_cart(an_add())).await;
        assert_eq!(got, status, "{answer:?} gave {body}");
        let expected = if status.is_success() { "success" } else { "failure" };
        assert_eq!(body["status"], expected, "the JSON shape on {status}: {body}");
    }
    let (_, body, _) = {
        workers.then(refused(ErrorCode::Unavailable, "inventory at 10.0.0.7:50051 refused"));
        send(&router, add_to_cart(an_add())).await
    };
    assert!(!body.to_string().contains("10.0.0.7"), "a worker's own words about its dependencies stay in the log");
}

#[tokio::test]
async fn bad_input_is_refused_before_any_worker_is_asked() {
    let workers = Workers::answering(added(1));
    let state = state(workers.clone(), AuthMode::Off, 32);
    let router = app(state.clone());
    for body in [
        json!({"clientID": "ada", "productID": "mug", "quantity": 0}),
        json!({"clientID": "ada", "productID": "mug", "quantity": 1.5}),
        json!({"clientID": "ada", "productID": "mug", "quantity": "2"}),
        json!({"clientID": "ada", "quantity": 2}),
        json!({"clientID": " ", "productID": "mug", "quantity": 2}),
    ] {
        let (status, reply, _) = send(&router, add_to_cart(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} gave {reply}");
        assert_eq!(reply["status"], "failure");
    }
    let malformed =
        Request::post("/addToCart").header(header::CONTENT_TYPE, "application/json").body(Body::from("{")).unwrap();
    assert_eq!(send(&router, malformed).await.0, StatusCode::BAD_REQUEST);
    assert!(workers.asked().is_empty(), "no job was sent for a request the gateway refused");
}

#[tokio::test]
async fn the_idempotency_key_rides_with_the_job_and_a_bad_one_is_refused() {
    let workers = Workers::answering(added(2));
    let state = state(workers.clone(), AuthMode::Off, 32);
    let router = app(state.clone());
    let with_key = |key: &str| {
        let mut request = add_to_cart(an_add());
        request.headers_mut().insert("Idempotency-Key", key.parse().unwrap());
        request
    };
    assert_eq!(send(&router, with_key("add-1")).await.0, StatusCode::OK);
    let job: AddItem = workers.asked()[0].payload().expect("an add job");
    assert_eq!(job.idempotency_key.as_ref().map(|k| k.as_str()), Some("add-1"));
    assert_eq!((job.client_id.as_str(), job.quantity.get()), ("ada", 2));
    let too_long = "k".repeat(201);
    let (status, body, _) = send(&router, with_key(&too_long)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(workers.asked().len(), 1, "the refused key sent no job");
}

#[tokio::test]
async fn work_beyond_the_limit_is_shed_at_once_with_retry_after() {
    let workers = Workers::answering(added(1));
    let held = workers.hold.acquire_many(HOLD_PERMITS).await.unwrap();
    let state = state(workers.clone(), AuthMode::Off, 1);
    let router = app(state.clone());
    let first = tokio::spawn({
        let router = router.clone();
        async move { send(&router, add_to_cart(an_add())).await }
    });
    while workers.asked().is_empty() {
        tokio::task::yield_now().await;
    }
    let started = std::time::Instant::now();
    let (status, body, retry_after) = send(&router, add_to_cart(an_add())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(started.elapsed() < Duration::from_secs(1), "refused at once, not queued");
    assert_eq!(workers.asked().len(), 1, "the shed request sent no job");
    drop(held);
    assert_eq!(first.await.unwrap().0, StatusCode::OK, "the admitted request still completes");
}

#[tokio::test]
async fn with_keys_required_a_call_without_one_is_401_and_health_stays_open() {
    let workers = Workers::answering(added(1));
    let state = state(workers.clone(), AuthMode::Required, 32);
    let router = app(state.clone());
    let (status, body, _) = send(&router, add_to_cart(an_add())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["status"], "failure");
    let health = Request::get("/healthz").body(Body::empty()).unwrap();
    assert_eq!(send(&router, health).await.0, StatusCode::OK);
    assert!(workers.asked().is_empty());
}

fn view(order_id: &OrderId, status: &str, is_final: bool) -> OrderView {
    OrderView {
        order_id: order_id.clone(),
        client_id: ClientId::parse("ada").unwrap(),
        status: status.into(),
        is_final,
        lines: Vec::new(),
        total_cents: 2500,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        timeline: Vec::new(),
        channel: Channel::default(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiting_read_answers_with_the_final_order_its_event_brings() {
    let order_id = OrderId::generate();
    let workers = Workers::answering(reply::<OrderView>(Ok(view(&order_id, "PAYMENT_PENDING", false))));
    let state = state(workers.clone(), AuthMode::Off, 32);
    let router = app(state.clone());
    let read = tokio::spawn({
        let (router, id) = (router.clone(), order_id.clone());
        async move { send(&router, Request::get(format!("/orders/{id}?waitSeconds=10")).body(Body::empty()).unwrap()).await }
    });
    // The read has asked once and waits; before its fallback poll (1 s), the order's final event arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!read.is_finished(), "a pending order is waited for");
    state.waiters.wake(order_id.as_str(), Some(view(&order_id, "CONFIRMED", true)));
    let (status, body, _) = read.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "CONFIRMED", "{body}");
    assert_eq!(workers.asked().len(), 1, "answered from the event, not by asking again");
}

#[tokio::test(start_paused = true)]
async fn a_waiting_read_gives_up_at_its_bound_with_the_order_as_it_stands() {
    let order_id = OrderId::generate();
    let workers = Workers::answering(reply::<OrderView>(Ok(view(&order_id, "PAYMENT_PENDING", false))));
    let state = state(workers.clone(), AuthMode::Off, 32);
    let router = app(state.clone());
    let started = tokio::time::Instant::now();
    let (status, body, _) =
        send(&router, Request::get(format!("/orders/{order_id}?waitSeconds=5")).body(Body::empty()).unwrap()).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("PAYMENT_PENDING")), "{body}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(6), "waited {waited:?} of 5 s");
    assert!(workers.asked().len() >= 2, "asked again at each fallback poll, not only once");
    let (status, body, _) =
        send(&router, Request::get(format!("/orders/{order_id}?waitSeconds=11")).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "past the bound of 10 s: {body}");
}
