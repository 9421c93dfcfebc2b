//! The simulated payment provider: it answers `payment.charge` and `payment.refund` messages like a
//! real provider would. Payment is asynchronous: the saga sends a request (through its outbox) and the
//! outcome arrives later as a `payment.result` message, so a slow provider holds no saga worker.

use std::sync::Arc;

use ordermesh_bus::{Incoming, Outcome, Publisher, publisher::Outgoing};
use ordermesh_messages::{
    ClientId, Envelope, kinds,
    payloads::{ChargeRequest, PaymentOutcome, PaymentResult, RefundRequest},
};
use rand::Rng;
use sqlx::PgPool;

use crate::config::SimulatorSettings;

/// The simulated provider: balances per client, declines above the balance, injectable latency and failures.
#[derive(Debug, Clone)]
pub struct Simulator {
    /// The provider's books (its own tables in checkout's database).
    pub pool: PgPool,
    /// Publishes results.
    pub publisher: Arc<Publisher>,
    /// Where results go (checkout-manager's payment-results queue).
    pub results_queue: String,
    /// Behaviour knobs.
    pub settings: SimulatorSettings,
}

/// Sets a client's balance at the simulated provider (tests and demos).
pub async fn set_balance(pool: &PgPool, client: &ClientId, balance_cents: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO payment_accounts (client_id, balance_cents) VALUES ($1, $2)
         ON CONFLICT (client_id) DO UPDATE SET balance_cents = EXCLUDED.balance_cents, updated_at = now()",
    )
    .bind(client.as_str())
    .bind(balance_cents)
    .execute(pool)
    .await?;
    Ok(())
}

/// A client's balance at the simulated provider, if it has an account yet.
pub async fn balance(pool: &PgPool, client: &ClientId) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT balance_cents FROM payment_accounts WHERE client_id = $1")
        .bind(client.as_str())
        .fetch_optional(pool)
        .await
}

impl Simulator {
    /// Handles one message from the provider's request queue.
    pub async fn handle(&self, incoming: Incoming) -> Outcome {
        match incoming.envelope.kind.as_str() {
            kinds::PAYMENT_CHARGE => match incoming.envelope.payload::<ChargeRequest>() {
                Ok(request) => self.charge(request).await,
                Err(reason) => Outcome::DeadLetter(reason),
            },
            kinds::PAYMENT_REFUND => match incoming.envelope.payload::<RefundRequest>() {
                Ok(request) => match self.refund(&request).await {
                    Ok(()) => Outcome::Ack,
                    Err(e) => Outcome::Retry(e.to_string()),
                },
                Err(reason) => Outcome::DeadLetter(reason),
            },
            other => Outcome::DeadLetter(format!("unknown message type {other:?}")),
        }
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
            match self.book(&request).await {
                Ok(outcome) => outcome,
                // A racing copy of the same charge booked first: its outcome is this one's too.
                Err(e) if is_unique_violation(&e) => match self.book(&request).await {
                    Ok(outcome) => outcome,
                    Err(e) => return Outcome::Retry(format!("payment books unavailable: {e}")),
                },
                Err(e) => return Outcome::Retry(format!("payment books unavailable: {e}")),
            }
        };
        let result = PaymentResult {
            payment_id: request.payment_id,
            order_id: request.order_id.clone(),
            attempt: request.attempt,
            outcome,
        };
        let envelope = Envelope::new(kinds::PAYMENT_RESULT, &result).correlated(request.order_id.as_str());
        match self.publisher.publish(Outgoing::to_queue(&self.results_queue, envelope)).await {
            Ok(()) => Outcome::Ack,
            // The charge is booked under its payment id; the redelivery re-sends the same outcome.
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    /// Takes the money if the balance allows, once per payment id; a repeat returns the first outcome.
    async fn book(&self, request: &ChargeRequest) -> sqlx::Result<PaymentOutcome> {
        let mut tx = self.pool.begin().await?;
        let previous: Option<(String, String)> =
            sqlx::query_as("SELECT outcome, reason FROM payment_charges WHERE payment_id = $1 FOR UPDATE")
                .bind(&request.payment_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((outcome, reason)) = previous {
            tx.commit().await?;
            return Ok(match outcome.as_str() {
                "succeeded" => PaymentOutcome::Succeeded,
                "refunded" => PaymentOutcome::Declined { reason: "the charge was refunded".into() },
                _ => PaymentOutcome::Declined { reason },
            });
        }
        sqlx::query("INSERT INTO payment_accounts (client_id, balance_cents) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(request.client_id.as_str())
            .bind(self.settings.default_balance_cents)
            .execute(&mut *tx)
            .await?;
        let charged = sqlx::query(
            "UPDATE payment_accounts SET balance_cents = balance_cents - $2, updated_at = now()
             WHERE client_id = $1 AND balance_cents >= $2",
        )
        .bind(request.client_id.as_str())
        .bind(request.amount_cents)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let (outcome, stored, reason) = if charged {
            (PaymentOutcome::Succeeded, "succeeded", String::new())
        } else {
            let reason = "insufficient funds".to_owned();
            (PaymentOutcome::Declined { reason: reason.clone() }, "declined", reason)
        };
        // A racing duplicate of the same payment id fails on the key, and is booked again: it then sees this row.
        sqlx::query("INSERT INTO payment_charges (payment_id, client_id, amount_cents, outcome, reason) VALUES ($1, $2, $3, $4, $5)")
            .bind(&request.payment_id)
            .bind(request.client_id.as_str())
            .bind(request.amount_cents)
            .bind(stored)
            .bind(&reason)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn refund(&self, request: &RefundRequest) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        let refunded: Option<(String, i64)> = sqlx::query_as(
            "UPDATE payment_charges SET outcome = 'refunded', refunded_at = now()
             WHERE payment_id = $1 AND outcome = 'succeeded' RETURNING client_id, amount_cents",
        )
        .bind(&request.payment_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((client, amount)) = refunded {
            sqlx::query("UPDATE payment_accounts SET balance_cents = balance_cents + $2, updated_at = now() WHERE client_id = $1")
                .bind(&client)
                .bind(amount)
                .execute(&mut *tx)
                .await?;
            tracing::info!(payment_id = %request.payment_id, amount, "charge refunded");
        }
        tx.commit().await?;
        Ok(())
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}
