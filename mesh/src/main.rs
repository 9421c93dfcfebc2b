//! `cargo run`: the whole ordermesh in one process against the local RabbitMQ and PostgreSQL (Ctrl-C
//! stops it); `cargo run -- audit`: check the promises across the services' databases and the broker.

use std::{process::ExitCode, time::Duration};

use ordermesh::{MeshConfig, run};
use ordermesh_lifecycle::shutdown_signal;
use ordermesh_ops::{audit, probe};
use ordermesh_telemetry::init;

// mimalloc: about 10 % more checkouts/s and less CPU than glibc's malloc, for some idle memory (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: ordermesh                       run the whole mesh
       ordermesh audit [--stuck-after-seconds N]   check stock, orders, payments, outboxes and queues;
                                                    exits 1 if a promise is broken (default N: 60)
       ordermesh queues migrate                     turn queues of another kind (classic) into the configured kind
                                                    (quorum), moving their messages; run with the services stopped
       ordermesh probe URL                          health check: http://host:port/path must answer 2xx,
                                                    grpc://host:port must be SERVING; exits 1 if not
       ordermesh keys create --role shopper|operator --channel NAME [--rate N] [--note TEXT]
       ordermesh keys list
       ordermesh keys revoke KEY_ID                 API keys of the gateway (printed once at creation)
       ordermesh tokens create --role service|operator [--note TEXT]
       ordermesh tokens register --role service|operator --token-file PATH [--note TEXT]
       ordermesh tokens list
       ordermesh tokens revoke TOKEN_ID             inventory's access tokens (printed once at creation)";

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => {
            let _telemetry = init("ordermesh")?;
            run(MeshConfig::from_env()?, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        ["audit", rest @ ..] => {
            let stuck_after = match rest {
                [] => Duration::from_secs(60),
                ["--stuck-after-seconds", n] => Duration::from_secs(n.parse().map_err(|_| anyhow::anyhow!("{USAGE}"))?),
                _ => anyhow::bail!("{USAGE}"),
            };
            let config = MeshConfig::from_env()?;
            let report = audit::run(config.audit_targets(), stuck_after).await?;
            #[allow(clippy::print_stdout)] // the report is the command's output
            {
                print!("{}", report.render());
            }
            Ok(if report.violations.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        ["keys", ..] => {
            let gateway = <api_gateway::Config as ordermesh_config::FromEnv>::from_env()?;
            let channels = api_gateway::config::channels(&ordermesh_config::Env::process())?;
            let out = api_gateway::keys::command(&args[1..], &gateway.database, &channels).await?;
            #[allow(clippy::print_stdout)] // the command's output
            {
                print!("{out}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ["tokens", ..] => {
            let inventory = <inventory_manager::Config as ordermesh_config::FromEnv>::from_env()?;
            let out = inventory_manager::tokens::command(&args[1..], &inventory.database).await?;
            #[allow(clippy::print_stdout)] // the command's output
            {
                print!("{out}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ["queues", "migrate"] => {
            let config = MeshConfig::from_env()?;
            let shared = &config.checkout.shared;
            let conn = ordermesh_bus::connection::connect_first(shared.amqp_url.expose())
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", shared.amqp_url))?;
            let report = ordermesh_bus::migrate::migrate(&conn, &config.checkout.topology).await?;
            let _ = conn.close(200, "migrated".into()).await;
            #[allow(clippy::print_stdout)] // the report is the command's output
            {
                print!("{}", report.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        ["probe", url] => Ok(match probe::probe(url).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unhealthy: {e:#}");
                ExitCode::FAILURE
            }
        }),
        _ => anyhow::bail!("{USAGE}"),
    }
}
