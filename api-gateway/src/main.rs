//! api-gateway's binary: configuration from the environment, then serve until Ctrl-C or SIGTERM;
//! `api-gateway keys …` manages API keys instead.

use api_gateway::{Application, Config, config::channels, keys};
use ordermesh_config::{Env, FromEnv};
use ordermesh_lifecycle::shutdown_signal;
use ordermesh_telemetry::init;

// mimalloc: about 10 % more checkouts/s and less CPU than glibc's malloc, for some idle memory (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "keys") {
        let config = Config::from_env()?;
        let out = keys::command(&args[1..], &config.database, &channels(&Env::process())?).await?;
        #[allow(clippy::print_stdout)] // the command's output
        {
            print!("{out}");
        }
        return Ok(());
    }
    anyhow::ensure!(
        args.is_empty(),
        "usage: api-gateway            serve\n       api-gateway {}",
        keys::USAGE.trim_start_matches("usage: ")
    );
    // Kept to the end of main: dropping it flushes the spans not yet exported.
    let _telemetry = init("api-gateway")?;
    let config = Config::from_env()?;
    tracing::info!(?config, "starting api-gateway");
    let app = Application::build(config).await?;
    tracing::info!(addr = %app.local_addr(), "api-gateway listening; Swagger UI at /documentation");
    app.run_until_stopped(shutdown_signal()).await
}
