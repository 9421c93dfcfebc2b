//! The balanced channel against real gRPC servers on port 0: a replica that drops its connections under the
//! calls (as a killed one does) costs no call that its caller may repeat.

use std::time::Duration;

use ordermesh_proto::{Balanced, balance::once_more_if_unavailable};
use tokio::net::{TcpListener, TcpStream};
use tonic::{Request, Response, Status};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse,
    health_client::HealthClient,
    health_server::{Health, HealthServer},
};

/// A gRPC server answering health checks, on a port of its own.
async fn healthy_replica() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// A health service that takes every call and never answers it.
struct Hanging;

#[tonic::async_trait]
impl Health for Hanging {
    async fn check(&self, _: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        std::future::pending().await
    }

    type WatchStream = tokio_stream::Pending<Result<HealthCheckResponse, Status>>;

    async fn watch(&self, _: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        std::future::pending().await
    }
}

/// A replica in the moment of its death: its connections carry the HTTP/2 handshake and the calls to a server
/// that never answers, and are closed after 200 ms, calls still in flight. A TCP connection to it still
/// succeeds, so it keeps coming back into the rotation.
async fn dying_replica() -> std::net::SocketAddr {
    let hanging = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = hanging.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HealthServer::new(Hanging))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(hanging)),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut upstream) = TcpStream::connect(server).await else { return };
                let relay = tokio::io::copy_bidirectional(&mut client, &mut upstream);
                let _ = tokio::time::timeout(Duration::from_millis(200), relay).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn calls_whose_replica_closes_their_connection_are_unavailable_and_go_once_more_to_another() {
    let (good, dying) = (healthy_replica().await, dying_replica().await);
    let channel = Balanced::new(&format!("http://{good},http://{dying}"), Duration::from_secs(2)).unwrap();
    let client = HealthClient::new(channel.clone());

    // Alone, the dying replica fails every call as UNAVAILABLE (it gave no answer), however HTTP/2 ended it:
    // fifty at once, so some are queued on a connection as it closes.
    let alone = HealthClient::new(Balanced::new(&format!("http://{dying}"), Duration::from_secs(2)).unwrap());
    let calls = (0..50).map(|_| {
        let mut alone = alone.clone();
        async move { alone.check(HealthCheckRequest::default()).await.unwrap_err() }
    });
    for status in futures::future::join_all(calls).await {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }

    let mut served = 0;
    for _ in 0..60 {
        let reply = once_more_if_unavailable(|| {
            let mut client = client.clone();
            async move { client.check(HealthCheckRequest::default()).await }
        })
        .await;
        assert!(reply.is_ok(), "a call failed although another replica was up: {reply:?}");
        served += 1;
        // Spread over time, so the dying replica comes back into the rotation between calls.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served, 60);
}
