//! The email of an order event, and its sending over SMTP (`lettre`).

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};
use ordermesh_messages::{kinds::events, money::Money, payloads::OrderEvent};

use crate::config::SmtpSettings;

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The server refused the message for good (a bad recipient): sending again cannot help.
    #[error("the mail server refused the email: {0}")]
    Rejected(String),
    /// The server is unreachable, slow or busy: try again later.
    #[error("the mail server is unavailable: {0}")]
    Unavailable(String),
}

/// Sends emails through one SMTP server, with pooled connections.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("from", &self.from.to_string()).finish_non_exhaustive()
    }
}

impl Mailer {
    /// Checks the settings without connecting (or needing a runtime).
    pub fn check(settings: &SmtpSettings) -> anyhow::Result<()> {
        AsyncSmtpTransport::<Tokio1Executor>::from_url(settings.url.expose())?;
        settings.from.parse::<Mailbox>()?;
        Ok(())
    }

    /// A mailer for `settings`; connects on first use.
    pub fn new(settings: &SmtpSettings) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(settings.url.expose())?
            .timeout(Some(settings.timeout))
            .build();
        Ok(Self { transport, from: settings.from.parse()?, timeout: settings.timeout })
    }

    /// Sends `email` to `to`; bounded by the configured timeout (twice: connection and exchange).
    pub async fn send(&self, to: &str, email: &Composed) -> Result<(), SendError> {
        let to: Mailbox = to.parse().map_err(|e| SendError::Rejected(format!("recipient {to:?}: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            // The event id names the message, so a mail system that sees it twice can tell.
            .message_id(Some(format!("<{}@ordermesh>", email.event_id)))
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone())
            .map_err(|e| SendError::Rejected(format!("building the email: {e}")))?;
        match tokio::time::timeout(self.timeout * 2, self.transport.send(message)).await {
            Err(_) => Err(SendError::Unavailable(format!("no answer within {:?}", self.timeout * 2))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_permanent() => Err(SendError::Rejected(e.to_string())),
            Ok(Err(e)) => Err(SendError::Unavailable(e.to_string())),
        }
    }
}

/// An email ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    /// The event it is about (names the message).
    pub event_id: uuid::Uuid,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// An amount as the email shows it; a line whose total does not fit (never one checkout-manager accepted) says so.
fn money(amount: Option<Money>) -> String {
    amount.map_or_else(|| "more than can be shown".to_owned(), |m| m.to_string())
}

/// The email for an order event of `kind`, or `None` for an event nobody is emailed about.
pub fn compose(kind: &str, event_id: uuid::Uuid, event: &OrderEvent) -> Option<Composed> {
    let id = event.order_id.as_str();
    let (subject, opening, next) = match kind {
        events::ORDER_CONFIRMED => (
            format!("Order {id} confirmed"),
            "Thank you: your order is confirmed and paid.".to_owned(),
            "We will let you know when it ships.".to_owned(),
        ),
        events::ORDER_PAYMENT_DECLINED => (
            format!("Order {id}: payment declined"),
            format!("Your payment for this order was declined ({}).", reason(event)),
            "Nothing was charged and the items were released. What to do next: check your payment details or \
             balance, then place the order again."
                .to_owned(),
        ),
        events::ORDER_FAILED => (
            format!("Order {id} could not be completed"),
            format!("We could not complete this order ({}).", reason(event)),
            "Nothing was charged (any charge taken is being refunded) and the items were released. What to do \
             next: place the order again in a few minutes, or contact us with the order id."
                .to_owned(),
        ),
        _ => return None,
    };
    let mut body = format!("{opening}\n\nOrder: {id}\nStatus: {}\n\n", event.status);
    for line in &event.lines {
        body.push_str(&format!(
            "  {} x {} at {} = {}\n",
            line.quantity,
            line.product_id,
            money(Some(Money::cents(line.unit_price_cents))),
            money(Money::cents(line.unit_price_cents).times(line.quantity))
        ));
    }
    body.push_str(&format!("\nTotal: {}\n\n{next}\n", money(Some(Money::cents(event.total_cents)))));
    Some(Composed { event_id, subject, body })
}

fn reason(event: &OrderEvent) -> &str {
    if event.reason.is_empty() { "no reason was given" } else { &event.reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordermesh_messages::{ClientId, OrderId, ProductId, payloads::OrderLine};

    fn event(status: &str, reason: &str) -> OrderEvent {
        OrderEvent {
            order_id: OrderId::parse("o-1").unwrap(),
            client_id: ClientId::parse("ada").unwrap(),
            status: status.into(),
            reason: reason.into(),
            total_cents: 2_599,
            at: chrono::Utc::now(),
            channel: Default::default(),
            lines: vec![
                OrderLine { product_id: ProductId::parse("mug").unwrap(), quantity: 2, unit_price_cents: 1_250 },
                OrderLine { product_id: ProductId::parse("sticker").unwrap(), quantity: 1, unit_price_cents: 99 },
            ],
            created_at: None,
            timeline: Vec::new(),
        }
    }

    #[test]
    fn a_confirmation_lists_lines_and_total() {
        let email = compose(events::ORDER_CONFIRMED, uuid::Uuid::nil(), &event("CONFIRMED", "")).unwrap();
        assert_eq!(email.subject, "Order o-1 confirmed");
        assert!(email.body.contains("  2 x mug at 12.50 = 25.00\n"), "{}", email.body);
        assert!(email.body.contains("  1 x sticker at 0.99 = 0.99\n"), "{}", email.body);
        assert!(email.body.contains("Total: 25.99"), "{}", email.body);
        assert!(email.body.contains("Status: CONFIRMED"), "{}", email.body);
    }

    #[test]
    fn a_decline_says_why_and_what_to_do() {
        let email = compose(
            events::ORDER_PAYMENT_DECLINED,
            uuid::Uuid::nil(),
            &event("PAYMENT_DECLINED", "insufficient funds"),
        )
        .unwrap();
        assert_eq!(email.subject, "Order o-1: payment declined");
        assert!(email.body.contains("declined (insufficient funds)"), "{}", email.body);
        assert!(email.body.contains("What to do next"), "{}", email.body);
    }

    #[test]
    fn other_events_are_not_emailed() {
        assert_eq!(compose(events::ORDER_RESERVED, uuid::Uuid::nil(), &event("RESERVED", "")), None);
    }
}
