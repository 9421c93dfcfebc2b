//! The whole ordermesh in one process, for development and demos: inventory-manager, cart-manager,
//! checkout-manager, payment-gateway (the simulated provider), notifier and api-gateway, each configured
//! from the environment as its own binary would be (but for `GATEWAY_AUTH` and `INVENTORY_AUTH`, which
//! default to `off` here).

use std::future::Future;

use ordermesh_config::FromEnv;

/// The demo catalogue loaded into an empty inventory: id, name, price in cents, units on hand.
pub const DEMO_CATALOGUE: &[(&str, &str, i64, i64)] = &[
    ("mug", "Coffee mug", 1_250, 100),
    ("tshirt", "T-shirt", 1_999, 50),
    ("poster", "Poster", 899, 20),
    ("hoodie", "Hoodie", 4_500, 10),
    ("sticker", "Sticker pack", 350, 500),
    ("lamp", "Desk lamp", 60_000, 3),
];

/// Configuration of every service, each read from the environment as its binary reads it.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// inventory-manager.
    pub inventory: inventory_manager::Config,
    /// cart-manager.
    pub cart: cart_manager::Config,
    /// checkout-manager.
    pub checkout: checkout_manager::Config,
    /// payment-gateway.
    pub payment: payment_gateway::Config,
    /// api-gateway.
    pub gateway: api_gateway::Config,
    /// notifier.
    pub notifier: notifier::Config,
}

impl MeshConfig {
    /// Where `ordermesh audit` looks: every service's database and the broker, as configured.
    pub fn audit_targets(&self) -> ordermesh_ops::audit::Targets<'_> {
        ordermesh_ops::audit::Targets {
            inventory: &self.inventory.database,
            cart: &self.cart.database,
            checkout: &self.checkout.database,
            payment: &self.payment.database,
            amqp_url: &self.checkout.shared.amqp_url,
            topology: &self.checkout.topology,
        }
    }

    /// Reads every service's variables from the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            inventory: {
                let mut inventory = inventory_manager::Config::from_env()?;
                // The development mesh lets anyone change the catalogue unless asked otherwise; inventory warns.
                if std::env::var_os("INVENTORY_AUTH").is_none() {
                    inventory.auth = ordermesh_config::AuthMode::Off;
                }
                inventory
            },
            cart: cart_manager::Config::from_env()?,
            checkout: checkout_manager::Config::from_env()?,
            payment: payment_gateway::Config::from_env()?,
            gateway: {
                let mut gateway = api_gateway::Config::from_env()?;
                // The all-in-one development mesh admits everyone unless asked otherwise; the gateway warns.
                if std::env::var_os("GATEWAY_AUTH").is_none() {
                    gateway.auth = api_gateway::AuthMode::Off;
                }
                gateway
            },
            notifier: notifier::Config::from_env()?,
        })
    }
}

/// Loads [`DEMO_CATALOGUE`] if the catalogue is empty; returns whether it did. Written through inventory's
/// store, in this process that owns it, so it needs no operator token when `INVENTORY_AUTH=required`.
pub async fn seed_demo_catalogue(pool: &sqlx::PgPool) -> anyhow::Result<bool> {
    use inventory_manager::{domain, store};
    let (first, _) = store::list_products(pool, None, 1).await?;
    if !first.is_empty() {
        return Ok(false);
    }
    for (id, name, price_cents, on_hand) in DEMO_CATALOGUE {
        store::upsert_product(
            pool,
            &domain::ProductId::parse(*id)?,
            &domain::ProductName::parse((*name).to_owned())?,
            domain::PriceCents::parse(*price_cents)?,
            domain::OnHand::parse(*on_hand)?,
        )
        .await?;
    }
    Ok(true)
}

/// Starts the six services and runs them until `shutdown` resolves, then stops them all.
pub async fn run(config: MeshConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let inventory = inventory_manager::Application::build(config.inventory).await?;
    let inventory_pool = inventory.pool().clone();
    let cart = cart_manager::Application::build(config.cart).await?;
    let checkout = checkout_manager::Application::build(config.checkout).await?;
    let payment = payment_gateway::Application::build(config.payment).await?;
    let notifier = notifier::Application::build(config.notifier).await?;
    let gateway = api_gateway::Application::build(config.gateway).await?;
    let gateway_addr = gateway.local_addr();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // A service that ends by itself (the broker holds queues of another kind) ends the whole process: the
    // others are stopped and its error is what `cargo run` exits with.
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watch_end = |task: tokio::task::JoinHandle<anyhow::Result<()>>| {
        let ended_tx = ended_tx.clone();
        tokio::spawn(async move {
            let result = task.await.map_err(anyhow::Error::from).and_then(|r| r);
            let _ = ended_tx.send(());
            result
        })
    };
    let services = [
        watch_end(tokio::spawn(inventory.run_until_stopped(stopped(stop_rx.clone())))),
        watch_end(tokio::spawn(cart.run_until_stopped(stopped(stop_rx.clone())))),
        watch_end(tokio::spawn(checkout.run_until_stopped(stopped(stop_rx.clone())))),
        watch_end(tokio::spawn(payment.run_until_stopped(stopped(stop_rx.clone())))),
        watch_end(tokio::spawn(notifier.run_until_stopped(stopped(stop_rx.clone())))),
        watch_end(tokio::spawn(gateway.run_until_stopped(stopped(stop_rx.clone())))),
    ];
    match seed_demo_catalogue(&inventory_pool).await {
        Ok(true) => tracing::info!(products = DEMO_CATALOGUE.len(), "loaded the demo catalogue"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "could not load the demo catalogue"),
    }
    tracing::info!("ordermesh is up: http://{gateway_addr}  (Swagger UI: http://{gateway_addr}/documentation)");
    tokio::select! {
        () = shutdown => {}
        _ = ended.recv() => tracing::warn!("a service ended by itself; stopping the others"),
    }
    tracing::info!("stopping ordermesh");
    let _ = stop_tx.send(true);
    let mut result = Ok(());
    for service in services {
        if let Err(e) = service.await.map_err(anyhow::Error::from).and_then(|r| r) {
            tracing::error!(error = %e, "a service stopped with an error");
            result = Err(e);
        }
    }
    result
}
