//! The gRPC client cart-manager uses to look up products: every call carries a deadline.

use std::{collections::HashMap, future::Future, time::Duration};

use ordermesh_config::SharedSettings;
use ordermesh_messages::ProductId;
use ordermesh_proto::{InventoryClient, client::PRODUCTS_PER_CALL};
use ordermesh_telemetry::Metrics;
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

/// What the cart asks of the catalogue. A trait, so that the cart's domain is tested against a catalogue
/// the test controls (`tests/cart.rs`), and served by [`Inventory`] in the service.
pub trait Catalogue: Send + Sync {
    /// Price and availability of one product ([`CartError::UnknownProduct`] if the catalogue lacks it).
    fn product(&self, id: &ProductId) -> impl Future<Output = Result<ProductInfo, CartError>> + Send;
    /// Price and availability of each of `ids` that the catalogue knows (unknown ones are left out).
    fn products(
        &self,
        ids: &[ProductId],
    ) -> impl Future<Output = Result<HashMap<ProductId, ProductInfo>, CartError>> + Send;
}

impl Catalogue for Inventory {
    async fn product(&self, id: &ProductId) -> Result<ProductInfo, CartError> {
        Inventory::product(self, id).await
    }
    async fn products(&self, ids: &[ProductId]) -> Result<HashMap<ProductId, ProductInfo>, CartError> {
        Inventory::products(self, ids).await
    }
}

/// inventory-manager as cart-manager asks it: the shared client ([`InventoryClient`]: lazy, balanced over
/// the replicas, metered, each call with its deadline), its answers in cart-manager's terms.
#[derive(Debug, Clone)]
pub struct Inventory {
    client: InventoryClient,
}

impl Inventory {
    /// A client of `INVENTORY_URL` (e.g. `http://127.0.0.1:50051`), with its token and TLS settings.
    pub fn new(shared: &SharedSettings, timeout: Duration, metrics: Metrics) -> anyhow::Result<Self> {
        Ok(Self { client: InventoryClient::new(shared, timeout, metrics)? })
    }

    /// Price and availability of each of `ids` that the catalogue knows (unknown ones are left out), in as
    /// few calls as the server allows.
    pub async fn products(&self, ids: &[ProductId]) -> Result<HashMap<ProductId, ProductInfo>, CartError> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(PRODUCTS_PER_CALL) {
            let products = self
                .client
                .get_products(chunk.iter().map(ToString::to_string).collect())
                .await
                .map_err(|s| failure(&s, "GetProducts"))?;
            for p in products {
                let id = ProductId::parse(p.product_id)
                    .map_err(|e| CartError::Internal(anyhow::anyhow!("inventory sent a bad product id: {e}")))?;
                found.insert(id, ProductInfo { price_cents: p.price_cents, available: p.available });
            }
        }
        Ok(found)
    }

    /// Price and availability of one product.
    pub async fn product(&self, id: &ProductId) -> Result<ProductInfo, CartError> {
        match self.client.get_product(id.as_str()).await {
            Ok(p) => Ok(ProductInfo { price_cents: p.price_cents, available: p.available }),
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
