//! inventory-manager's own metrics: reservation events, and the reservations held now (the plumbing's, gRPC
//! and pool, are `ordermesh_telemetry`'s).

use ordermesh_telemetry::{
    Metrics,
    metrics::{ServiceLabels, StateLabels},
};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use sqlx::PgPool;

/// The stock's families, registered in a service instance's [`Metrics`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct StockMetrics {
    reservations: Family<StateLabels, Counter>,
}

impl StockMetrics {
    /// The families, registered in `metrics`; the reservations held are counted in `pool` at each scrape (an
    /// index-only count over the held ones), so they cost nothing when nobody looks.
    pub fn register(metrics: &Metrics, pool: &PgPool) -> Self {
        let this = Self { reservations: Family::default() };
        metrics.register(
            "reservations",
            "Reservation events: held, committed, rolled_back, expired",
            this.reservations.clone(),
        );
        let held = Family::<ServiceLabels, Gauge>::default();
        metrics.register("reservations_held", "Reservations held now (sampled when scraped)", held.clone());
        let (m, pool) = (metrics.clone(), pool.clone());
        metrics.add_sampler(move || {
            let (m, pool, held) = (m.clone(), pool.clone(), held.clone());
            async move {
                match sqlx::query_scalar!(r#"SELECT count(*) AS "held!" FROM reservations WHERE status = 'held'"#)
                    .fetch_one(&pool)
                    .await
                {
                    Ok(n) => m.set(&held, n),
                    Err(e) => tracing::warn!(error = %e, "sampling the reservations held failed"),
                }
            }
        });
        this
    }

    /// Counts `by` reservation events of one kind (`held`, `committed`, `rolled_back`, `expired`).
    pub fn events(&self, event: &str, by: u64) {
        Metrics::count(&self.reservations, event, by);
    }
}
