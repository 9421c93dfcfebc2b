//! `cargo run`: the whole ordermesh in one process against the local RabbitMQ and PostgreSQL. Ctrl-C stops it.

use ordermesh::{MeshConfig, run};
use ordermesh_lifecycle::{init_logs, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logs();
    run(MeshConfig::from_env()?, shutdown_signal()).await
}
