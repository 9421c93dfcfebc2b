//! The notifier's own metric: order events by what became of their email (the plumbing's, AMQP and pool, are
//! `ordermesh_telemetry`'s).

use ordermesh_telemetry::{Metrics, metrics::StateLabels};
use prometheus_client::metrics::{counter::Counter, family::Family};

/// The emails' family, registered in a service instance's [`Metrics`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct EmailMetrics {
    emails: Family<StateLabels, Counter>,
}

impl EmailMetrics {
    /// The family, registered in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self { emails: Family::default() };
        metrics.register(
            "notifier_emails",
            "Order events handled by the notifier: sent, skipped (no address), duplicate, rejected, retry",
            this.emails.clone(),
        );
        this
    }

    /// Counts an event whose email came to `outcome`.
    pub fn count(&self, outcome: &str) {
        Metrics::count(&self.emails, outcome, 1);
    }
}
