//! cart-manager's binary: configuration from the environment, then work until Ctrl-C or SIGTERM.

use cart_manager::{Application, Config};
use ordermesh_config::FromEnv;
use ordermesh_lifecycle::shutdown_signal;
use ordermesh_telemetry::init;

// mimalloc: about 10 % more checkouts/s and less CPU than glibc's malloc, for some idle memory (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Kept to the end of main: dropping it flushes the spans not yet exported.
    let _telemetry = init("cart-manager")?;
    let config = Config::from_env()?;
    tracing::info!(?config, "starting cart-manager");
    Application::build(config).await?.run_until_stopped(shutdown_signal()).await
}
