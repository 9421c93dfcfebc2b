//! The command line: `ordermesh-bench [--scenario spread|hot|mixed] (--rate N | --concurrency N) [--duration S] ...`.

use std::time::Duration;

/// What the shoppers buy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// One unit of one of 50 products each: no hot row.
    Spread,
    /// A flash sale: one unit each of one product with limited stock.
    Hot,
    /// Carts of 1–3 lines; one cart in ten also holds a product beyond the shopper's balance (declined).
    Mixed,
}

/// How shoppers arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// At a fixed rate per second, whatever the mesh does (latency measured from the schedule).
    Open {
        /// Shoppers started per second.
        rate: f64,
    },
    /// This many shoppers at once, each starting again as soon as it is done (finds the maximum).
    Closed {
        /// Shoppers at once.
        concurrency: usize,
    },
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The gateway's base URL.
    pub gateway: String,
    /// inventory-manager's gRPC URL (the catalogue is prepared there).
    pub inventory: String,
    /// What shoppers buy.
    pub scenario: Scenario,
    /// How they arrive.
    pub mode: Mode,
    /// How long shoppers keep arriving.
    pub duration: Duration,
    /// Units of the hot product.
    pub hot_stock: i64,
    /// Open loop: shoppers in flight at most; beyond, an arrival is counted as a generator error.
    pub max_in_flight: usize,
    /// How long a shopper waits for its order to be final.
    pub final_wait: Duration,
    /// Print the report as JSON instead of a table.
    pub json: bool,
    /// Write the latency histograms as an SVG picture here.
    pub svg: Option<String>,
    /// No progress line.
    pub quiet: bool,
    /// Only measure the floor (`ordermesh-bench floor`).
    pub floor_only: bool,
    /// Measure the floor first and report the mesh's rate as a fraction of it.
    pub with_floor: bool,
    /// The broker and database work of one checkout, for the floor's simulated checkouts.
    pub checkout_work: crate::floor::CheckoutWork,
    /// RabbitMQ, for the floor.
    pub amqp: String,
    /// A PostgreSQL URL whose server the floor may create a throwaway database on.
    pub database: String,
    /// Sent as `X-API-Key` (a shopper key) to a gateway that asks for keys (`--api-key`, or `ORDERMESH_API_KEY`).
    pub api_key: Option<ApiKey>,
    /// An operator token of inventory's, for one that asks for one (`INVENTORY_AUTH=required`): the run's
    /// products are written with it.
    pub inventory_token: Option<ApiKey>,
}

/// An API key; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(pub String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            gateway: "http://127.0.0.1:5003".into(),
            inventory: "http://127.0.0.1:50051".into(),
            scenario: Scenario::Spread,
            mode: Mode::Open { rate: 100.0 },
            duration: Duration::from_secs(10),
            hot_stock: 1_000,
            max_in_flight: 20_000,
            final_wait: Duration::from_secs(30),
            json: false,
            svg: None,
            quiet: false,
            floor_only: false,
            with_floor: false,
            checkout_work: crate::floor::CheckoutWork::default(),
            amqp: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            database: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            api_key: std::env::var("ORDERMESH_API_KEY").ok().filter(|k| !k.is_empty()).map(ApiKey),
            inventory_token: std::env::var("INVENTORY_TOKEN").ok().filter(|k| !k.is_empty()).map(ApiKey),
        }
    }
}

/// The usage text.
pub const USAGE: &str =
    "usage: ordermesh-bench [--scenario spread|hot|mixed] [--rate N | --concurrency N] [--duration SECONDS]
                       [--hot-stock UNITS] [--max-in-flight N] [--gateway URL] [--inventory URL]
                       [--json] [--svg FILE] [--quiet] [--api-key KEY] [--inventory-token TOKEN]
                       [--with-floor] [--checkout-work ROUND_TRIPS,UNROUTED,STATEMENTS]
       ordermesh-bench floor [--concurrency N] [--duration SECONDS] [--checkout-work R,U,S]
  Drives a running mesh (default http://127.0.0.1:5003 and http://127.0.0.1:50051) with shoppers who add to cart,
  check out and wait for the final status. --rate: open loop, shoppers per second (default 100);
  --concurrency: closed loop. Prepares its own products; exits 1 if a unit was oversold or stock does not balance.
  --api-key (or ORDERMESH_API_KEY): a shopper key, for a gateway that asks for one (GATEWAY_AUTH=required).
  --inventory-token (or INVENTORY_TOKEN): an operator token, for an inventory that asks for one (INVENTORY_AUTH=required).
  TLS: GATEWAY_CA_FILE for an https:// gateway; INVENTORY_CA_FILE, INVENTORY_CLIENT_CERT_FILE and _KEY_FILE for an
  https:// inventory, as the services read them.
  floor (or --with-floor, before the run): what RabbitMQ and PostgreSQL alone do here, and the rate of simulated
  checkouts that each do one checkout's broker and database work (--checkout-work, default 7,4,10).";

impl Options {
    /// Messages in flight (and PostgreSQL clients) for the floor: the closed loop's shoppers, or 64.
    pub fn floor_in_flight(&self) -> usize {
        match self.mode {
            Mode::Closed { concurrency } => concurrency.max(1),
            Mode::Open { .. } => 64,
        }
    }

    /// Parses the arguments (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> anyhow::Result<Self> {
        let mut options = Self::default();
        let mut args = args.into_iter().peekable();
        if args.peek().is_some_and(|a| a == "floor") {
            args.next();
            options.floor_only = true;
        }
        while let Some(flag) = args.next() {
            let mut value = |name: &str| args.next().ok_or_else(|| anyhow::anyhow!("{name} needs a value\n{USAGE}"));
            let number = |name: &str, raw: String| -> anyhow::Result<f64> {
                raw.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .ok_or_else(|| anyhow::anyhow!("{name} must be a positive number, got {raw:?}"))
            };
            match flag.as_str() {
                "--scenario" => {
                    options.scenario = match value("--scenario")?.as_str() {
                        "spread" => Scenario::Spread,
                        "hot" => Scenario::Hot,
                        "mixed" => Scenario::Mixed,
                        other => anyhow::bail!("--scenario must be spread, hot or mixed, got {other:?}"),
                    }
                }
                "--rate" => options.mode = Mode::Open { rate: number("--rate", value("--rate")?)? },
                "--concurrency" => {
                    options.mode =
                        Mode::Closed { concurrency: number("--concurrency", value("--concurrency")?)? as usize }
                }
                "--duration" => options.duration = Duration::from_secs_f64(number("--duration", value("--duration")?)?),
                "--hot-stock" => options.hot_stock = number("--hot-stock", value("--hot-stock")?)? as i64,
                "--max-in-flight" => {
                    options.max_in_flight = number("--max-in-flight", value("--max-in-flight")?)? as usize
                }
                "--gateway" => options.gateway = value("--gateway")?,
                "--inventory" => options.inventory = value("--inventory")?,
                "--svg" => options.svg = Some(value("--svg")?),
                "--json" => options.json = true,
                "--with-floor" => options.with_floor = true,
                "--checkout-work" => {
                    options.checkout_work = value("--checkout-work")?.parse().map_err(|e: String| anyhow::anyhow!(e))?
                }
                "--amqp" => options.amqp = value("--amqp")?,
                "--database" => options.database = value("--database")?,
                "--api-key" => options.api_key = Some(ApiKey(value("--api-key")?)),
                "--inventory-token" => options.inventory_token = Some(ApiKey(value("--inventory-token")?)),
                "--quiet" => options.quiet = true,
                "--help" | "-h" => anyhow::bail!("{USAGE}"),
                other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Options> {
        Options::parse(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn flags_set_what_they_say_and_bad_ones_are_refused() {
        let o =
            parse(&["--scenario", "hot", "--rate", "250", "--duration", "5", "--hot-stock", "40", "--json"]).unwrap();
        assert_eq!(
            (o.scenario, o.mode, o.duration, o.hot_stock, o.json),
            (Scenario::Hot, Mode::Open { rate: 250.0 }, Duration::from_secs(5), 40, true)
        );
        assert_eq!(parse(&["--concurrency", "64"]).unwrap().mode, Mode::Closed { concurrency: 64 });
        let floor = parse(&["floor", "--concurrency", "32"]).unwrap();
        assert!(floor.floor_only && floor.mode == Mode::Closed { concurrency: 32 });
        assert!(parse(&["--with-floor"]).unwrap().with_floor);
        let work = parse(&["floor", "--checkout-work", "3,0,5"]).unwrap().checkout_work;
        assert_eq!((work.round_trips, work.unrouted, work.statements), (3, 0, 5));
        for bad in [
            &["--rate", "0"][..],
            &["--rate", "lots"],
            &["--scenario", "cold"],
            &["--nope"],
            &["--duration"],
            &["--checkout-work", "7,4"],
            &["--checkout-work", "0,0,0"],
            &["--checkout-work", "7,-1,13"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
