//! Starting a test's mesh: its databases, names and services, waiting until it serves.

use super::*;

/// Starts a mesh with the default shape.
pub async fn spawn_mesh() -> TestMesh {
    spawn_mesh_with(Options::default()).await
}

/// Starts inventory, checkout, `carts` cart-managers and `gateways` gateways, all on fresh names.
pub async fn spawn_mesh_with(options: Options) -> TestMesh {
    init_logs();
    // The longest test takes about a minute; one that hangs must not hold CI for its whole time.
    ordermesh_testkit::watchdog::arm(TEST_LIMIT);
    static STALE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    STALE.get_or_init(|| testdb::drop_stale_databases(DB_PREFIX)).await;

    let namespace = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let topology = Topology::ephemeral(namespace, Duration::from_secs(600));
    let (inv_url, inv_db) = testdb::unique_database(DB_PREFIX);
    let (cart_url, cart_db) = testdb::unique_database(DB_PREFIX);
    let (chk_url, chk_db) = testdb::unique_database(DB_PREFIX);
    let (pay_url, pay_db) = testdb::unique_database(DB_PREFIX);
    let mut databases = vec![inv_db, cart_db, chk_db, pay_db];
    let db = |url: String| DatabaseSettings { max_connections: 8, ..DatabaseSettings::new(url) };
    let amqp_url = options.amqp_url.clone().unwrap_or_else(|| DEFAULT_AMQP_URL.into());
    let shared = |inventory_url: &str| SharedSettings {
        amqp_url: amqp_url.as_str().into(),
        inventory_url: inventory_url.to_owned(),
        inventory_timeout: Duration::from_millis(500),
        ..SharedSettings::default()
    };

    let any_port: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let metrics_url = |addr: std::net::SocketAddr| format!("http://{addr}/metrics");
    let inventory = inventory_manager::Application::build(inventory_manager::Config {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: any_port,
        database: db(inv_url),
        // Inventory's tokens have their own tests (inventory-manager/tests/api/auth.rs) and the nemesis.
        auth: ordermesh_config::AuthMode::Off,
        ..Default::default()
    })
    .await
    .expect("inventory builds");
    let real_inventory_url = format!("http://{}", inventory.local_addr());
    let inventory_url = options.inventory_url.clone().unwrap_or_else(|| real_inventory_url.clone());
    let mut metrics = vec![("inventory-manager", metrics_url(inventory.metrics_addr()))];
    let mut services = vec![Running::spawn(|stop| inventory.run_until_stopped(stop))];

    let mut checkout_config = checkout_manager::Config {
        database: db(chk_url),
        topology: topology.clone(),
        shared: shared(&inventory_url),
        poll: Duration::from_millis(100),
        metrics_addr: any_port,
        ..Default::default()
    };
    checkout_config.saga.retry_base = Duration::from_millis(50);
    checkout_config.saga.max_backoff = Duration::from_millis(500);
    checkout_config.saga.payment_timeout = Duration::from_secs(3);
    checkout_config.saga.inventory_timeout = Duration::from_millis(500);
    (options.checkout)(&mut checkout_config);
    let (checkout, addr) = start_checkout(checkout_config.clone()).await;
    metrics.push(("checkout-manager", metrics_url(addr)));
    // The test's own pool: the service's closes when it stops.
    let checkout_db = ordermesh_db::connect(&checkout_config.database).await.expect("checkout database");

    let mut payment_config = payment_gateway::Config {
        database: db(pay_url),
        topology: topology.clone(),
        shared: shared(&inventory_url),
        metrics_addr: any_port,
        ..Default::default()
    };
    payment_config.simulator.latency = Duration::from_millis(5);
    (options.payment)(&mut payment_config);
    let payment = payment_gateway::Application::build(payment_config).await.expect("payment builds");
    let payment_db = payment.pool().clone();
    metrics.push(("payment-gateway", metrics_url(payment.metrics_addr())));
    services.push(Running::spawn(|stop| payment.run_until_stopped(stop)));

    let cart_config = cart_manager::Config {
        database: db(cart_url.clone()),
        topology: topology.clone(),
        shared: shared(&inventory_url),
        outbox_poll: Duration::from_millis(100),
        metrics_addr: any_port,
        ..Default::default()
    };
    let mut carts = Vec::new();
    for _ in 0..options.carts {
        let (cart, addr) = start_cart(cart_config.clone()).await;
        metrics.push(("cart-manager", metrics_url(addr)));
        carts.push(cart);
    }

    let mut notifier_db = None;
    if let Some(smtp_url) = &options.smtp_url {
        let (url, name) = testdb::unique_database(DB_PREFIX);
        databases.push(name);
        let mut config = notifier::Config {
            database: db(url),
            topology: topology.clone(),
            shared: shared(&inventory_url),
            metrics_addr: any_port,
            ..Default::default()
        };
        config.smtp.url = smtp_url.as_str().into();
        config.smtp.timeout = Duration::from_secs(2);
        let notifier = notifier::Application::build(config).await.expect("notifier builds");
        notifier_db = Some(notifier.pool().clone());
        metrics.push(("notifier", metrics_url(notifier.metrics_addr())));
        services.push(Running::spawn(|stop| notifier.run_until_stopped(stop)));
    }

    let gateway_db = if options.gateway_auth {
        let (url, name) = testdb::unique_database(DB_PREFIX);
        databases.push(name);
        let settings = db(url);
        let pool =
            ordermesh_db::connect_and_migrate(&settings, &api_gateway::keys::MIGRATOR).await.expect("gateway database");
        Some((pool, settings))
    } else {
        None
    };
    let mut gateways = Vec::new();
    for _ in 0..options.gateways {
        let gateway = api_gateway::Application::build(api_gateway::Config {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            shared: SharedSettings {
                amqp_url: options.gateway_amqp_url.clone().unwrap_or_else(|| amqp_url.clone()).into(),
                ..shared(&inventory_url)
            },
            topology: topology.clone(),
            request_timeout: options.request_timeout,
            wait_poll: options.gateway_wait_poll.unwrap_or(Duration::from_secs(1)),
            max_in_flight: options.gateway_max_in_flight.unwrap_or(256),
            max_open_orders: options.gateway_max_open_orders.unwrap_or(256),
            auth: if options.gateway_auth { api_gateway::AuthMode::Required } else { api_gateway::AuthMode::Off },
            database: gateway_db
                .as_ref()
                .map_or_else(|| api_gateway::Config::default().database, |(_, settings)| settings.clone()),
            key_rate_per_second: options.key_rate_per_second.unwrap_or(1_000),
            ..Default::default()
        })
        .await
        .expect("gateway builds");
        gateways.push(format!("http://{}", gateway.local_addr()));
        services.push(Running::spawn(|stop| gateway.run_until_stopped(stop)));
    }

    let channel =
        // Every call of the test's own client has a deadline too: a test fails with a reason, it never hangs.
        Channel::from_shared(real_inventory_url.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("inventory reachable");
    let mesh = TestMesh {
        gateways,
        http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
        inventory: InventoryServiceClient::new(channel),
        inventory_url: real_inventory_url,
        checkout_db,
        payment_db,
        gateway_db,
        notifier_db,
        metrics,
        topology,
        carts,
        cart_db: ordermesh_db::connect_and_migrate(&cart_config.database, &cart_manager::startup::MIGRATOR)
            .await
            .expect("cart database"),
        cart_config,
        checkout: Some(checkout),
        checkout_config,
        services,
        databases,
    };
    if options.gateway_amqp_url.is_none() && options.amqp_url.is_none() {
        mesh.wait_until_gateways_connected().await;
        if options.carts > 0 {
            mesh.wait_until_consuming().await;
        }
    }
    mesh
}

pub(super) async fn start_cart(config: cart_manager::Config) -> (Running, std::net::SocketAddr) {
    let cart = cart_manager::Application::build(config).await.expect("cart builds");
    let addr = cart.metrics_addr();
    (Running::spawn(|stop| cart.run_until_stopped(stop)), addr)
}

pub(super) async fn start_checkout(config: checkout_manager::Config) -> (Running, std::net::SocketAddr) {
    let checkout = checkout_manager::Application::build(config).await.expect("checkout builds");
    let addr = checkout.metrics_addr();
    (Running::spawn(|stop| checkout.run_until_stopped(stop)), addr)
}
