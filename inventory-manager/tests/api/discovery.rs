//! Server reflection (v1 and v1alpha) and the standard health service.

use futures::StreamExt;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::{v1, v1alpha};

use crate::helpers::spawn_inventory;

#[tokio::test]
async fn reflection_lists_the_services_in_both_versions() {
    let inv = spawn_inventory().await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", inv.addr)).unwrap().connect().await.unwrap();

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut replies = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let Some(Ok(v1::ServerReflectionResponse {
        message_response: Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)),
        ..
    })) = replies.next().await
    else {
        panic!("no list of services");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["inventory.v1.InventoryService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }

    // grpcurl 1.8 asks v1alpha for a symbol's file.
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "inventory.v1.InventoryService".into(),
        )),
    };
    let mut replies = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    match replies.next().await {
        Some(Ok(v1alpha::ServerReflectionResponse {
            message_response: Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)),
            ..
        })) => assert!(!files.file_descriptor_proto.is_empty()),
        other => panic!("no descriptor for the service: {other:?}"),
    }
    inv.stop().await;
}

#[tokio::test]
async fn health_reports_serving() {
    let inv = spawn_inventory().await;
    let mut health = HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", inv.addr)).unwrap().connect().await.unwrap(),
    );
    for service in ["", "inventory.v1.InventoryService"] {
        let reply = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "service {service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    inv.stop().await;
}
