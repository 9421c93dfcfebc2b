//! The AMQP transport and the simulated behaviour: each request is decoded, booked, and answered (a
//! charge with a `payment.result`, a refund with a `payment.refunded`); latency and technical failures can
//! be injected.

use std::sync::Arc;

use ordermesh_bus::{Handled, Incoming, Outcome, Publisher, publisher::Outgoing};
use ordermesh_messages::{
    Envelope, kinds,
    payloads::{ChargeRequest, PaymentOutcome, PaymentResult, RefundDone, RefundRequest},
};
use rand::Rng;
use sqlx::PgPool;

use crate::{books, config::SimulatorSettings};

/// The simulated provider.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Its books.
    pub pool: PgPool,
    /// Publishes results.
    pub publisher: Arc<Publisher>,
    /// Where results go (checkout-manager's payment-results queue).
    pub results_queue: String,
    /// Behaviour knobs.
    pub settings: SimulatorSettings,
}

impl Provider {
    /// Handles one message from `payment-gateway.requests`.
    pub async fn handle(&self, incoming: Incoming) -> Handled {
        Ok(match incoming.envelope.kind.as_str() {
            kinds::PAYMENT_CHARGE => {
                let request = incoming.decode::<ChargeRequest>()?;
                if request.amount_cents < 0 {
                    return Err(Outcome::DeadLetter(format!("charge of a negative amount {}", request.amount_cents)));
                }
                self.charge(request).await
            }
            kinds::PAYMENT_REFUND => {
                let request = incoming.decode::<RefundRequest>()?;
                match books::refund(&self.pool, &request).await {
                    Ok(refunded) => {
                        if refunded {
                            tracing::info!(payment_id = %request.payment_id, "charge refunded");
                        }
                        // Acknowledged whether or not money moved now: checkout-manager asks until it hears.
                        let done = RefundDone { payment_id: request.payment_id, order_id: request.order_id, refunded };
                        self.answer(Envelope::new(kinds::PAYMENT_REFUNDED, &done).correlated(done.order_id.as_str()))
                            .await
                    }
                    Err(e) => Outcome::Retry(format!("payment books unavailable: {e}")),
                }
            }
            other => return Err(Outcome::unknown_kind(other)),
        })
    }

    async fn charge(&self, request: ChargeRequest) -> Outcome {
        if !self.settings.latency.is_zero() {
            tokio::time::sleep(self.settings.latency).await;
        }
        let injected = request.attempt <= self.settings.fail_first_attempts
            || (self.settings.failure_rate > 0.0 && rand::rng().random_bool(self.settings.failure_rate));
        let outcome = if injected {
            PaymentOutcome::TechnicalFailure {
                reason: format!("simulated provider error on attempt {}", request.attempt),
            }
        } else {
            match books::charge(&self.pool, &request, self.settings.default_balance_cents).await {
                Ok(outcome) => outcome,
                Err(e) => return Outcome::Retry(format!("payment books unavailable: {e}")),
            }
        };
        let result = PaymentResult {
            payment_id: request.payment_id,
            order_id: request.order_id.clone(),
            attempt: request.attempt,
            outcome,
        };
        self.answer(Envelope::new(kinds::PAYMENT_RESULT, &result).correlated(request.order_id.as_str())).await
    }

    /// Sends an answer to checkout-manager; the request is acked only once the broker confirmed it.
    async fn answer(&self, envelope: Envelope) -> Outcome {
        match self.publisher.publish(Outgoing::to_queue(&self.results_queue, envelope)).await {
            Ok(()) => Outcome::Ack,
            // What was asked is booked under its payment id; the retry sends the same answer again.
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }
}
