//! payment-gateway's binary: configuration from the environment, then answer payments until Ctrl-C or SIGTERM.

use ordermesh_config::FromEnv;
use ordermesh_lifecycle::shutdown_signal;
use ordermesh_telemetry::init;
use payment_gateway::{Application, Config};

// mimalloc: about 10 % more checkouts/s and less CPU than glibc's malloc, for some idle memory (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Kept to the end of main: dropping it flushes the spans not yet exported.
    let _telemetry = init("payment-gateway")?;
    let config = Config::from_env()?;
    tracing::info!(?config, "starting payment-gateway");
    Application::build(config).await?.run_until_stopped(shutdown_signal()).await
}
