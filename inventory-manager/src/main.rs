//! inventory-manager's binary: configuration from the environment, then serve until Ctrl-C or SIGTERM;
//! `inventory-manager tokens …` manages access tokens instead.

use inventory_manager::{Application, Config, tokens};
use ordermesh_config::FromEnv;
use ordermesh_lifecycle::shutdown_signal;
use ordermesh_telemetry::init;

// mimalloc: about 10 % more checkouts/s and less CPU than glibc's malloc, for some idle memory (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "tokens") {
        let out = tokens::command(&args[1..], &Config::from_env()?.database).await?;
        #[allow(clippy::print_stdout)] // the command's output
        {
            print!("{out}");
        }
        return Ok(());
    }
    anyhow::ensure!(
        args.is_empty(),
        "usage: inventory-manager            serve\n       inventory-manager {}",
        tokens::USAGE.trim_start_matches("usage: ").replace("\n       ", "\n       inventory-manager ")
    );
    // Kept to the end of main: dropping it flushes the spans not yet exported.
    let _telemetry = init("inventory-manager")?;
    let config = Config::from_env()?;
    tracing::info!(?config, "starting inventory-manager");
    let app = Application::build(config).await?;
    tracing::info!(addr = %app.local_addr(), "inventory-manager listening");
    app.run_until_stopped(shutdown_signal()).await
}
