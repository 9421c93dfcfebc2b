//! The one client of inventory-manager the services hold: balanced over its replicas, metered, each call
//! with its deadline, and each call that is safe to repeat sent once more when its replica went away.

use std::time::Duration;

use ordermesh_config::SharedSettings;
use ordermesh_telemetry::{
    Metrics,
    grpc::{GrpcMetrics, GrpcMetricsLayer},
};
use tonic::{Response, Status};

use crate::{
    Balanced,
    balance::once_more_if_unavailable,
    inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient},
};

/// The most product ids one `GetProducts` call may carry (the server refuses more).
pub const PRODUCTS_PER_CALL: usize = 100;

/// How long a readiness probe waits for inventory.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// inventory-manager as every service reaches it: lazily (it may start later), over every replica of
/// `INVENTORY_URL`, with `INVENTORY_TOKEN` and the TLS settings, each call counted in the caller's metrics.
/// Every call here is a read or a write keyed by an id inventory deduplicates on, so each is safe to repeat.
#[derive(Debug, Clone)]
pub struct InventoryClient {
    client: InventoryServiceClient<GrpcMetrics<Balanced>>,
    timeout: Duration,
}

impl InventoryClient {
    /// A client whose calls are cut after `timeout`; a start-up error names the variables to look at.
    pub fn new(shared: &SharedSettings, timeout: Duration, metrics: Metrics) -> anyhow::Result<Self> {
        let token = shared.inventory_token.as_ref().map(|t| t.expose());
        let channel = pb::lazy_channel(&shared.inventory_url, timeout, token, &shared.inventory_tls)
            .map_err(|e| anyhow::anyhow!("INVENTORY_URL / INVENTORY_TOKEN / INVENTORY_CA_FILE: {e}"))?;
        let channel = GrpcMetricsLayer::client(metrics).wrap(channel);
        Ok(Self { client: InventoryServiceClient::new(channel), timeout })
    }

    /// One product's price and availability (`NOT_FOUND` for an unknown one).
    pub async fn get_product(&self, product_id: &str) -> Result<pb::Product, Status> {
        let message = pb::GetProductRequest { product_id: product_id.to_owned() };
        self.call(message, |mut c, r| async move { c.get_product(r).await }).await
    }

    /// The products of `ids` the catalogue knows (at most [`PRODUCTS_PER_CALL`]; unknown ones left out).
    pub async fn get_products(&self, ids: Vec<String>) -> Result<Vec<pb::Product>, Status> {
        let message = pb::GetProductsRequest { product_ids: ids };
        Ok(self.call(message, |mut c, r| async move { c.get_products(r).await }).await?.products)
    }

    /// One page of the catalogue, of at most `page_size` products, from `page_token` on.
    pub async fn list_products(&self, page_size: i32, page_token: String) -> Result<pb::ListProductsResponse, Status> {
        let message = pb::ListProductsRequest { page_size, page_token };
        self.call(message, |mut c, r| async move { c.list_products(r).await }).await
    }

    /// Holds every line of `message` under its reservation id (a repeat finds the same hold).
    pub async fn reserve(&self, message: pb::ReserveRequest) -> Result<pb::Reservation, Status> {
        self.call(message, |mut c, r| async move { c.reserve(r).await }).await
    }

    /// Turns the hold into a sale.
    pub async fn commit(&self, reservation_id: &str) -> Result<pb::Reservation, Status> {
        let message = pb::CommitReservationRequest { reservation_id: reservation_id.to_owned() };
        self.call(message, |mut c, r| async move { c.commit_reservation(r).await }).await
    }

    /// Releases the hold.
    pub async fn roll_back(&self, reservation_id: &str) -> Result<pb::Reservation, Status> {
        let message = pb::RollBackReservationRequest { reservation_id: reservation_id.to_owned() };
        self.call(message, |mut c, r| async move { c.roll_back_reservation(r).await }).await
    }

    /// Whether inventory answers now: one page of one product within a second, sent once (a readiness
    /// probe must say what is, not retry until it is so).
    pub async fn probe(&self) -> Result<(), Status> {
        let mut request = tonic::Request::new(pb::ListProductsRequest { page_size: 1, page_token: String::new() });
        request.set_timeout(PROBE_TIMEOUT.min(self.timeout));
        self.client.clone().list_products(request).await.map(|_| ())
    }

    /// Sends `message` with the deadline, once more if its replica was unavailable.
    async fn call<M, R, F, Fut>(&self, message: M, send: F) -> Result<R, Status>
    where
        M: Clone,
        F: Fn(InventoryServiceClient<GrpcMetrics<Balanced>>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        once_more_if_unavailable(|| {
            let mut request = tonic::Request::new(message.clone());
            request.set_timeout(self.timeout);
            send(self.client.clone(), request)
        })
        .await
        .map(Response::into_inner)
    }
}
