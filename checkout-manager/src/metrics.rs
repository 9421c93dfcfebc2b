//! checkout-manager's own metrics: the saga's steps and the orders it brings to an end (the plumbing's, HTTP,
//! AMQP, gRPC, outbox and pool, are `ordermesh_telemetry`'s).

use std::time::Duration;

use ordermesh_telemetry::{
    Metrics,
    metrics::{Buckets, StateLabels},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
};

use crate::orders::{Outcome, Stage, Status};

/// A saga step and how it ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
    outcome: &'static str,
}

/// The saga's families, registered in a service instance's [`Metrics`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct SagaMetrics {
    steps: Family<StepLabels, Counter>,
    step_seconds: Family<StepLabels, Histogram, Buckets>,
    orders_final: Family<StateLabels, Counter>,
}

impl SagaMetrics {
    /// The families, registered in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            steps: Family::default(),
            step_seconds: Family::new_with_constructor(Buckets),
            orders_final: Family::default(),
        };
        metrics.register("saga_steps", "Saga steps run, by step and outcome (ok, retry, failed)", this.steps.clone());
        metrics.register(
            "saga_step_duration_seconds",
            "Saga step latency, by step and outcome",
            this.step_seconds.clone(),
        );
        metrics.register("orders_final", "Orders that reached a final status, by status", this.orders_final.clone());
        this
    }

    /// Counts a step that came to `outcome` after `took`.
    pub fn step(&self, stage: Stage, outcome: Outcome, took: Duration) {
        let labels = StepLabels { step: stage.as_str(), outcome: outcome.as_str() };
        self.steps.get_or_create(&labels).inc();
        self.step_seconds.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Counts an order that ended in `status`.
    pub fn ended(&self, status: Status) {
        Metrics::count(&self.orders_final, status.as_str(), 1);
    }
}
