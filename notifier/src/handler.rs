//! The AMQP transport: order events from `notifier.order-events` become emails; profile requests from
//! `notifier.jobs` are answered.

use std::{sync::Arc, time::Duration};

use ordermesh_bus::{Handled, Incoming, Outcome};
use ordermesh_messages::{
    Envelope, ErrorCode, ReplyError, kinds,
    payloads::{GetProfile, OrderEvent, PutProfile},
};
use sqlx::PgPool;

use crate::{
    email::{self, Mailer, SendError},
    metrics::EmailMetrics,
    store::{self, Claim},
};

/// How long a claim on an event's email lasts: longer than a send may take (the mailer's bound is twice
/// its timeout), so a live sender never loses it, and short enough that a crashed one's email goes out
/// again within the redelivery's patience.
pub fn lease(smtp_timeout: Duration) -> Duration {
    smtp_timeout * 2 + Duration::from_secs(2)
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// Profiles and the record of sent emails.
    pub pool: PgPool,
    /// The SMTP server.
    pub mailer: Arc<Mailer>,
    /// See [`lease`].
    pub lease: Duration,
    /// Counts emails by outcome.
    pub metrics: EmailMetrics,
}

impl Notifier {
    /// One order event: its email, at most once.
    pub async fn event(&self, incoming: Incoming) -> Handled {
        let envelope = &incoming.envelope;
        let event = incoming.decode::<OrderEvent>()?;
        let Some(email) = email::compose(&envelope.kind, envelope.message_id, &event) else {
            // A binding wider than ours (an operator's) must not fill the dead-letter queue.
            tracing::debug!(kind = %envelope.kind, "not an event anyone is emailed about");
            return Ok(Outcome::Ack);
        };
        // A second delivery of an event being sent waits for that send to end (at most one lease), then looks again.
        for _ in 0..3 {
            let claim = store::claim(
                &self.pool,
                envelope.message_id,
                event.order_id.as_str(),
                &envelope.kind,
                &event.client_id,
                self.lease,
            )
            .await;
            match claim {
                Err(e) => return Ok(Outcome::Retry(format!("notifier database unavailable: {e}"))),
                Ok(Claim::Done(state)) => {
                    self.count(state);
                    return Ok(Outcome::Ack);
                }
                Ok(Claim::Busy(left)) => tokio::time::sleep(left.min(self.lease) + Duration::from_millis(50)).await,
                Ok(Claim::Send(to)) => return Ok(self.send(&to, &email).await),
            }
        }
        Ok(Outcome::Retry("another delivery of this event kept its claim".into()))
    }

    async fn send(&self, to: &str, email: &email::Composed) -> Outcome {
        match self.mailer.send(to, email).await {
            Ok(()) => {
                tracing::info!(event_id = %email.event_id, subject = %email.subject, "email sent");
                // If this write is lost, the claim runs out and the email may be sent once more: the one
                // window SMTP leaves (its Message-ID is the event's, so mail systems can tell).
                match store::mark_sent(&self.pool, email.event_id).await {
                    Ok(()) => {
                        self.count("sent");
                        Outcome::Ack
                    }
                    Err(e) => Outcome::Retry(format!("recording the sent email: {e}")),
                }
            }
            Err(SendError::Rejected(reason)) => {
                self.count("rejected");
                let _ = store::mark_rejected(&self.pool, email.event_id, &reason).await;
                Outcome::DeadLetter(reason)
            }
            Err(e @ SendError::Unavailable(_)) => {
                self.count("retry");
                let reason = e.to_string();
                let _ = store::release(&self.pool, email.event_id, &reason).await;
                Outcome::Retry(reason)
            }
        }
    }

    fn count(&self, outcome: &str) {
        self.metrics.count(outcome);
    }

    /// A profile request from the gateway.
    pub async fn job(&self, incoming: Incoming) -> Handled {
        let reply = match incoming.envelope.kind.as_str() {
            kinds::CLIENT_PUT_PROFILE => {
                let r = incoming.decode::<PutProfile>()?;
                store::put_profile(&self.pool, &r.client_id, r.email.as_ref()).await
            }
            kinds::CLIENT_GET_PROFILE => store::profile(&self.pool, &incoming.decode::<GetProfile>()?.client_id).await,
            other => return Err(Outcome::unknown_kind(other)),
        };
        let reply = reply.map_err(|e| {
            tracing::warn!(error = %e, "profile request failed");
            ReplyError { code: ErrorCode::Unavailable, message: format!("notifier database unavailable: {e}") }
        });
        Ok(Outcome::Reply(Envelope::new(kinds::REPLY, &reply)))
    }
}
