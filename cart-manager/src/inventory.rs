//! The gRPC client cart-manager uses to look up products: every call carries a deadline.

use std::time::Duration;

use ordermesh_messages::ProductId;
use ordermesh_proto::inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient};
use ordermesh_telemetry::{
    Metrics,
    grpc::{GrpcMetrics, GrpcMetricsLayer},
};
use tonic::{Code, transport::Channel};

use crate::error::CartError;

/// A product as cart-manager needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductInfo {
    /// Unit price now.
    pub price_cents: i64,
    /// Units available now.
    pub available: i64,
}

/// inventory-manager, reached lazily: the channel (re)connects on demand, so inventory may start later.
#[derive(Debug, Clone)]
pub struct Inventory {
    client: InventoryServiceClient<GrpcMetrics<Channel>>,
    timeout: Duration,
}

impl Inventory {
    /// A client for `url` (e.g. `http://127.0.0.1:50051`).
    pub fn new(url: &str, timeout: Duration, metrics: Metrics) -> anyhow::Result<Self> {
        let channel = GrpcMetricsLayer::client(metrics).wrap(pb::lazy_channel(url, timeout)?);
        Ok(Self { client: InventoryServiceClient::new(channel), timeout })
    }

    /// Price and availability of one product.
    pub async fn product(&self, id: &ProductId) -> Result<ProductInfo, CartError> {
        let mut request = tonic::Request::new(pb::GetProductRequest { product_id: id.to_string() });
        request.set_timeout(self.timeout);
        match self.client.clone().get_product(request).await {
            Ok(reply) => {
                let p = reply.into_inner();
                Ok(ProductInfo { price_cents: p.price_cents, available: p.available })
            }
            Err(status) if status.code() == Code::NotFound => Err(CartError::UnknownProduct(id.clone())),
            Err(status) => Err(match status.code() {
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Unknown
                | Code::ResourceExhausted => CartError::InventoryUnavailable(status.message().to_owned()),
                _ => CartError::Internal(anyhow::anyhow!("inventory GetProduct for {id}: {status}")),
            }),
        }
    }
}
