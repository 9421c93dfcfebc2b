//! One trace per order: an OTLP receiver in this test process gets the spans of one checkout from every
//! service (gateway, cart, checkout, inventory, payment), all under the trace id the client sent in its
//! `traceparent`. Its own test binary, because the span exporter is process-wide.

// The end-to-end helpers, of which this binary uses a part.
#[path = "e2e/helpers/mod.rs"]
#[allow(dead_code)]
mod helpers;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as AnyValue,
};
use ordermesh_telemetry::logs::{LogFormat, init_with};
use serde_json::json;
use tokio::time::Instant;

/// Span names by trace id (hex) and the `service` attribute of each span.
type Seen = Arc<Mutex<BTreeMap<String, Vec<(String, String)>>>>;

#[derive(Default)]
struct Receiver {
    seen: Seen,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut seen = self.seen.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let trace_id: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                    let service = span
                        .attributes
                        .iter()
                        .find(|a| a.key == "service")
                        .and_then(|a| a.value.as_ref()?.value.as_ref())
                        .map(|v| match v {
                            AnyValue::StringValue(s) => s.clone(),
                            other => format!("{other:?}"),
                        })
                        .unwrap_or_default();
                    seen.entry(trace_id).or_default().push((service, span.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_checkout_is_one_trace_across_every_service() {
    let receiver = Receiver::default();
    let seen = receiver.seen.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let telemetry = init_with("ordermesh-test", LogFormat::Silent, Some(&format!("http://{addr}"))).unwrap();

    let mesh = helpers::spawn_mesh().await;
    mesh.product("trace-lamp", 1_000, 5).await;
    // Listen to the order events, as another system would, to see the context in the AMQP headers too.
    let conn = lapin::Connection::connect(ordermesh_bus::DEFAULT_AMQP_URL, Default::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let exclusive = lapin::options::QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    let events = channel.queue_declare("".into(), exclusive, Default::default()).await.unwrap();
    let exchange = mesh.topology.order_events();
    channel
        .queue_bind(
            events.name().clone(),
            exchange.as_str().into(),
            "order.confirmed".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(mesh.add("trace-client", "trace-lamp", 1).await.0, 200);
    // The client's own trace context: the gateway continues it.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace_id}-{}-01", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let response = mesh
        .http
        .post(mesh.url("/checkOutCart"))
        .header("traceparent", &traceparent)
        .json(&json!({"clientID": "trace-client"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let order: serde_json::Value = response.json().await.unwrap();
    let order_id = order["orderID"].as_str().unwrap();
    assert_eq!(mesh.final_order(order_id).await["status"], "CONFIRMED");

    let deadline = Instant::now() + Duration::from_secs(10);
    let confirmed = loop {
        if let Some(m) = channel.basic_get(events.name().clone(), Default::default()).await.unwrap() {
            break m;
        }
        assert!(Instant::now() < deadline, "no order.confirmed event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let header = confirmed.delivery.properties.headers().as_ref().and_then(|h| h.inner().get("traceparent").cloned());
    match header {
        Some(lapin::types::AMQPValue::LongString(v)) => {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            assert!(v.contains(&trace_id), "the event's traceparent header {v} is not of trace {trace_id}");
        }
        other => panic!("the event carries no traceparent header: {other:?}"),
    }
    let _ = conn.close(200, "ok".into()).await;

    let wanted: BTreeSet<&str> =
        ["api-gateway", "cart-manager", "checkout-manager", "inventory-manager", "payment-gateway"].into();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        telemetry.flush();
        let spans = seen.lock().unwrap().get(&trace_id).cloned().unwrap_or_default();
        let services: BTreeSet<&str> = spans.iter().map(|(s, _)| s.as_str()).collect();
        let names: BTreeSet<&str> = spans.iter().map(|(_, n)| n.as_str()).collect();
        if wanted.is_subset(&services) && names.is_superset(&["http", "consume", "grpc"].into()) {
            break;
        }
        assert!(Instant::now() < deadline, "trace {trace_id} has spans {spans:?}, not from every service");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    mesh.stop().await;
}
