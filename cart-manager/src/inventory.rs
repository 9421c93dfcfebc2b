//! The gRPC client cart-manager uses to look up products: every call carries a deadline.

use std::{collections::HashMap, time::Duration};

use ordermesh_config::SharedSettings;
use ordermesh_messages::ProductId;
use ordermesh_proto::balance::once_more_if_unavailable;
use ordermesh_proto::inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient};
use ordermesh_telemetry::{
    Metrics,
    grpc::{GrpcMetrics, GrpcMetricsLayer},
};
use tonic::Code;

use crate::error::CartError;

/// A product as cart-manager needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductInfo {
    /// Unit price now.
    pub price_cents: i64,
    /// Units available now.
    pub available: i64,
}

/// inventory-manager, reached lazily: the channel (re)connects on demand, so inventory may start later, and
/// spreads the calls over its replicas; a call whose replica went away is sent once more (they are reads).
#[derive(Debug, Clone)]
pub struct Inventory {
    client: InventoryServiceClient<GrpcMetrics<ordermesh_proto::Balanced>>,
    timeout: Duration,
}

impl Inventory {
    /// A client of `INVENTORY_URL` (e.g. `http://127.0.0.1:50051`), with its token and TLS settings.
    pub fn new(shared: &SharedSettings, timeout: Duration, metrics: Metrics) -> anyhow::Result<Self> {
        let token = shared.inventory_token.as_ref().map(|t| t.expose());
        let channel = pb::lazy_channel(&shared.inventory_url, timeout, token, &shared.inventory_tls)
            .map_err(|e| anyhow::anyhow!("INVENTORY_URL / INVENTORY_TOKEN / INVENTORY_CA_FILE: {e}"))?;
        let channel = GrpcMetricsLayer::client(metrics).wrap(channel);
        Ok(Self { client: InventoryServiceClient::new(channel), timeout })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.set_timeout(self.timeout);
        r
    }

    /// Price and availability of each of `ids` that the catalogue knows (unknown ones are left out), in as
    /// few calls as the server allows (100 products each).
    pub async fn products(&self, ids: &[ProductId]) -> Result<HashMap<ProductId, ProductInfo>, CartError> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(100) {
            let message = pb::GetProductsRequest { product_ids: chunk.iter().map(ToString::to_string).collect() };
            let reply = once_more_if_unavailable(|| {
                let (mut client, request) = (self.client.clone(), self.request(message.clone()));
                async move { client.get_products(request).await }
            })
            .await
            .map_err(|s| failure(&s, "GetProducts"))?;
            for p in reply.into_inner().products {
                let id = ProductId::parse(p.product_id)
                    .map_err(|e| CartError::Internal(anyhow::anyhow!("inventory sent a bad product id: {e}")))?;
                found.insert(id, ProductInfo { price_cents: p.price_cents, available: p.available });
            }
        }
        Ok(found)
    }

    /// Price and availability of one product.
    pub async fn product(&self, id: &ProductId) -> Result<ProductInfo, CartError> {
        let message = pb::GetProductRequest { product_id: id.to_string() };
        match once_more_if_unavailable(|| {
            let (mut client, request) = (self.client.clone(), self.request(message.clone()));
            async move { client.get_product(request).await }
        })
        .await
        {
            Ok(reply) => {
                let p = reply.into_inner();
                Ok(ProductInfo { price_cents: p.price_cents, available: p.available })
            }
            Err(status) if status.code() == Code::NotFound => Err(CartError::UnknownProduct(id.clone())),
            Err(status) => Err(failure(&status, &format!("GetProduct for {id}"))),
        }
    }
}

/// What a failed call means to cart-manager: inventory away for now (the caller may retry), or a bug.
fn failure(status: &tonic::Status, call: &str) -> CartError {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::ResourceExhausted => {
            CartError::InventoryUnavailable(status.message().to_owned())
        }
        _ => CartError::Internal(anyhow::anyhow!("inventory {call}: {status}")),
    }
}
