//! The workspace as the deployment and configuration checks read it: its root, and the environment variables
//! the services read, recorded by running their loaders, to check that a setting a deployment file sets or
//! the configuration table names is one the code reads.

use std::{cell::RefCell, collections::BTreeSet, path::Path};

use ordermesh_config::{Env, FromEnv};

/// Read outside the loaders, at the start of every binary: logs and traces (`ordermesh-telemetry`'s `logs.rs`).
pub const READ_BY_TELEMETRY: [&str; 4] = ["RUST_LOG", "LOG_FORMAT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"];

/// The workspace's root directory.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root")
}

/// Every variable a service reads: what the six services' loaders (and the keys command's) ask for, none of
/// them set, with the ones telemetry reads. A secret's `<NAME>_FILE` is among them, as its loader asks for it.
pub fn read_variables() -> BTreeSet<String> {
    let asked = RefCell::new(BTreeSet::new());
    let record = |key: &str| {
        asked.borrow_mut().insert(key.to_owned());
        None
    };
    api_gateway::Config::from_lookup(record).unwrap();
    cart_manager::Config::from_lookup(record).unwrap();
    checkout_manager::Config::from_lookup(record).unwrap();
    inventory_manager::Config::from_lookup(record).unwrap();
    notifier::Config::from_lookup(record).unwrap();
    payment_gateway::Config::from_lookup(record).unwrap();
    api_gateway::config::channels(&Env::from_fn(record)).unwrap();
    let mut read = asked.into_inner();
    assert!(read.len() > 40, "the loaders were not run: {read:?}");
    read.extend(READ_BY_TELEMETRY.map(str::to_owned));
    read
}
