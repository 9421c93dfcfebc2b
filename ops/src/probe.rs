//! `ordermesh probe URL`: a health check for containers whose image has no curl or grpcurl. An `http://` or
//! `https://` URL must answer 2xx; a `grpc://host:port` server must report SERVING on `grpc.health.v1`.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// How long a probe may take before it counts as failed.
const PATIENCE: Duration = Duration::from_secs(3);

/// Checks `url`; `Ok` when healthy, an error saying why not otherwise.
pub async fn probe(url: &str) -> anyhow::Result<()> {
    tokio::time::timeout(PATIENCE, async {
        if let Some(rest) = url.strip_prefix("http://") {
            http(rest).await
        } else if url.starts_with("https://") {
            https(url).await
        } else if let Some(addr) = url.strip_prefix("grpc://") {
            grpc(addr).await
        } else {
            bail!("probe takes an http(s)://host:port/path or grpc://host:port URL, not {url:?}")
        }
    })
    .await
    .with_context(|| format!("{url} did not answer within {PATIENCE:?}"))?
}

async fn http(rest: &str) -> anyhow::Result<()> {
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let mut stream =
        tokio::net::TcpStream::connect(authority).await.with_context(|| format!("connecting to {authority}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = vec![0u8; 64];
    let n = stream.read(&mut head).await?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()).context("no HTTP status line")?;
    if (200..300).contains(&status) { Ok(()) } else { bail!("answered {status}") }
}

/// A probe of the process's own HTTPS port asks whether it answers, not whom to trust: like Kubernetes'
/// HTTPS probes, it does not verify the certificate (which names the service, not 127.0.0.1).
async fn https(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().danger_accept_invalid_certs(true).timeout(PATIENCE).build()?;
    let status = client.get(url).send().await.with_context(|| format!("connecting to {url}"))?.status();
    if status.is_success() { Ok(()) } else { bail!("answered {}", status.as_u16()) }
}

async fn grpc(addr: &str) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
    let reply = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await?.into_inner();
    match reply.status() {
        ServingStatus::Serving => Ok(()),
        other => bail!("reports {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_http_server_answering_2xx_is_healthy_and_others_are_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await.unwrap();
            }
        });
        probe(&format!("http://{addr}/healthz")).await.expect("200 is healthy");
        let err = probe(&format!("http://{addr}/healthz")).await.unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
        assert!(probe("ftp://x").await.is_err());
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert!(probe(&format!("grpc://{closed}")).await.is_err(), "nothing listening is unhealthy");
    }
}
