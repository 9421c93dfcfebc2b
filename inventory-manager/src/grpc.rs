//! The gRPC transport: decodes requests into domain types, calls the store, encodes the answer.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use ordermesh_proto::inventory::v1 as pb;
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::auth::Gate;
use crate::domain::{
    self, Line, Lines, OnHand, PriceCents, Product, ProductId, ProductName, Quantity, Reservation, ReservationId,
    ReservationStatus,
};
use crate::error::InventoryError;
use crate::metrics::StockMetrics;
use crate::tokens::Role;
use ordermesh_lifecycle::Alarm;

use crate::store;

/// Page size when a caller asks for none.
const DEFAULT_PAGE_SIZE: u32 = 50;
/// Larger pages are clamped to this.
const MAX_PAGE_SIZE: u32 = 500;
/// Most products one `GetProducts` reads: as many as a reservation may hold lines.
const MAX_PRODUCTS_PER_READ: usize = crate::domain::MAX_LINES;

/// `inventory.v1.InventoryService` over the store.
#[derive(Debug, Clone)]
pub struct InventoryGrpc {
    /// Every RPC is one transaction on this pool.
    pool: PgPool,
    /// Hold time for `ttl_seconds` 0.
    default_ttl: Duration,
    /// Longest hold accepted.
    max_ttl: Duration,
    /// Told of every hold, so the sweeper wakes in time for it.
    sweeps: Arc<Alarm>,
    /// Where reservation events are counted.
    metrics: StockMetrics,
    /// Who may call what.
    gate: Arc<Gate>,
}

impl InventoryGrpc {
    /// A service answering from `pool`.
    pub fn new(
        pool: PgPool,
        default_ttl: Duration,
        max_ttl: Duration,
        sweeps: Arc<Alarm>,
        metrics: StockMetrics,
        gate: Arc<Gate>,
    ) -> Self {
        Self { pool, default_ttl, max_ttl, sweeps, metrics, gate }
    }

    /// Counts `event` if this call made it happen: a replay answers with the first call's stamp, which is
    /// older than the call (the database stamps with its clock, on this host or one kept in time with it).
    fn count_if_new(&self, event: &str, stamp: Option<DateTime<Utc>>, called_at: DateTime<Utc>) {
        if stamp.is_some_and(|t| t >= called_at) {
            self.metrics.events(event, 1);
        }
    }

    fn ttl(&self, seconds: i64) -> Result<Duration, InventoryError> {
        match seconds {
            0 => Ok(self.default_ttl),
            s if s < 0 => Err(InventoryError::invalid("ttl_seconds", format!("must not be negative, got {s}"))),
            s if s.unsigned_abs() > self.max_ttl.as_secs() => Err(InventoryError::invalid(
                "ttl_seconds",
                format!("must be at most {}, got {s}", self.max_ttl.as_secs()),
            )),
            s => Ok(Duration::from_secs(s.unsigned_abs())),
        }
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::inventory_service_server::InventoryService for InventoryGrpc {
    async fn upsert_product(&self, request: Request<pb::UpsertProductRequest>) -> RpcResult<pb::Product> {
        self.gate.check(&request, Role::Operator).await?;
        let r = request.into_inner();
        let id = domain::product_id(r.product_id)?;
        let name = ProductName::parse(r.name)?;
        let price = PriceCents::parse(r.price_cents)?;
        let on_hand = OnHand::parse(r.on_hand)?;
        let product = store::upsert_product(&self.pool, &id, &name, price, on_hand).await?;
        Ok(Response::new(product.into()))
    }

    async fn get_product(&self, request: Request<pb::GetProductRequest>) -> RpcResult<pb::Product> {
        self.gate.check(&request, Role::Service).await?;
        let id = domain::product_id(request.into_inner().product_id)?;
        Ok(Response::new(store::get_product(&self.pool, &id).await?.into()))
    }

    async fn get_products(&self, request: Request<pb::GetProductsRequest>) -> RpcResult<pb::GetProductsResponse> {
        self.gate.check(&request, Role::Service).await?;
        let raw = request.into_inner().product_ids;
        if raw.is_empty() || raw.len() > MAX_PRODUCTS_PER_READ {
            return Err(InventoryError::invalid(
                "product_ids",
                format!("must list 1 to {MAX_PRODUCTS_PER_READ} products, got {}", raw.len()),
            )
            .into());
        }
        let mut ids = raw.into_iter().map(domain::product_id).collect::<Result<Vec<_>, _>>()?;
        ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        ids.dedup();
        let products = store::get_products(&self.pool, &ids).await?;
        Ok(Response::new(pb::GetProductsResponse { products: products.into_iter().map(Into::into).collect() }))
    }

    async fn list_products(&self, request: Request<pb::ListProductsRequest>) -> RpcResult<pb::ListProductsResponse> {
        self.gate.check(&request, Role::Service).await?;
        let r = request.into_inner();
        let page_size = match r.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => {
                return Err(InventoryError::invalid("page_size", format!("must not be negative, got {n}")).into());
            }
            n => n.unsigned_abs().min(MAX_PAGE_SIZE),
        };
        // The token is the last product id of the previous page: opaque to callers, stable under inserts.
        let after = match r.page_token.as_str() {
            "" => None,
            token => Some(
                domain::product_id(token)
                    .map_err(|_| InventoryError::invalid("page_token", "is not a token this service issued"))?,
            ),
        };
        let (products, more) =
            store::list_products(&self.pool, after.as_ref().map(ProductId::as_str), page_size).await?;
        let next_page_token = match (more, products.last()) {
            (true, Some(last)) => last.product_id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListProductsResponse {
            products: products.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn get_available_quantity(
        &self,
        request: Request<pb::GetAvailableQuantityRequest>,
    ) -> RpcResult<pb::AvailableQuantity> {
        self.gate.check(&request, Role::Service).await?;
        let id = domain::product_id(request.into_inner().product_id)?;
        let p = store::get_product(&self.pool, &id).await?;
        Ok(Response::new(pb::AvailableQuantity {
            product_id: p.product_id,
            available: p.available,
            on_hand: p.on_hand,
            reserved: p.reserved,
        }))
    }

    async fn reserve(&self, request: Request<pb::ReserveRequest>) -> RpcResult<pb::Reservation> {
        self.gate.check(&request, Role::Service).await?;
        let r = request.into_inner();
        let id = ReservationId::parse(r.reservation_id)?;
        let lines = r
            .lines
            .into_iter()
            .map(|l| Ok(Line { product_id: domain::product_id(l.product_id)?, quantity: Quantity::parse(l.quantity)? }))
            .collect::<Result<Vec<_>, InventoryError>>()?;
        let lines = Lines::parse(lines)?;
        let ttl = self.ttl(r.ttl_seconds)?;
        let called_at = Utc::now();
        let reservation = store::reserve(&self.pool, &id, &lines, ttl).await?;
        self.sweeps.due_in(ttl);
        self.count_if_new("held", Some(reservation.created_at), called_at);
        Ok(Response::new(reservation.into()))
    }

    async fn commit_reservation(&self, request: Request<pb::CommitReservationRequest>) -> RpcResult<pb::Reservation> {
        self.gate.check(&request, Role::Service).await?;
        let id = ReservationId::parse(request.into_inner().reservation_id)?;
        let called_at = Utc::now();
        let reservation = store::commit(&self.pool, &id).await?;
        self.count_if_new("committed", reservation.committed_at, called_at);
        Ok(Response::new(reservation.into()))
    }

    async fn roll_back_reservation(
        &self,
        request: Request<pb::RollBackReservationRequest>,
    ) -> RpcResult<pb::Reservation> {
        self.gate.check(&request, Role::Service).await?;
        let id = ReservationId::parse(request.into_inner().reservation_id)?;
        let called_at = Utc::now();
        let reservation = store::roll_back(&self.pool, &id).await?;
        self.count_if_new("rolled_back", reservation.rolled_back_at, called_at);
        Ok(Response::new(reservation.into()))
    }

    async fn get_reservation(&self, request: Request<pb::GetReservationRequest>) -> RpcResult<pb::Reservation> {
        self.gate.check(&request, Role::Service).await?;
        let id = ReservationId::parse(request.into_inner().reservation_id)?;
        Ok(Response::new(store::get_reservation(&self.pool, &id).await?.into()))
    }
}

impl From<Product> for pb::Product {
    fn from(p: Product) -> Self {
        Self {
            product_id: p.product_id,
            name: p.name,
            price_cents: p.price_cents,
            on_hand: p.on_hand,
            reserved: p.reserved,
            available: p.available,
        }
    }
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos().try_into().unwrap_or(0) }
}

impl From<Reservation> for pb::Reservation {
    fn from(r: Reservation) -> Self {
        let status = match r.status {
            ReservationStatus::Held => pb::ReservationStatus::Held,
            ReservationStatus::Committed => pb::ReservationStatus::Committed,
            ReservationStatus::RolledBack => pb::ReservationStatus::RolledBack,
            ReservationStatus::Expired => pb::ReservationStatus::Expired,
        };
        Self {
            reservation_id: r.reservation_id.to_string(),
            expires_at: Some(timestamp(r.expires_at)),
            status: status.into(),
            lines: r
                .lines
                .iter()
                .map(|l| pb::ReservationLine { product_id: l.product_id.to_string(), quantity: l.quantity.get() })
                .collect(),
            created_at: Some(timestamp(r.created_at)),
            committed_at: r.committed_at.map(timestamp),
            rolled_back_at: r.rolled_back_at.map(timestamp),
            expired_at: r.expired_at.map(timestamp),
        }
    }
}
