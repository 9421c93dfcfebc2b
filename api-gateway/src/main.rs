//! api-gateway's binary: configuration from the environment, then serve until Ctrl-C or SIGTERM.

use api_gateway::{Application, Config};
use ordermesh_config::FromEnv;
use ordermesh_lifecycle::shutdown_signal;
use ordermesh_telemetry::init;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Kept to the end of main: dropping it flushes the spans not yet exported.
    let _telemetry = init("api-gateway")?;
    let config = Config::from_env()?;
    tracing::info!(?config, "starting api-gateway");
    let app = Application::build(config).await?;
    tracing::info!(addr = %app.local_addr(), "api-gateway listening; Swagger UI at /documentation");
    app.run_until_stopped(shutdown_signal()).await
}
