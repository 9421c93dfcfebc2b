//! docs/configuration.md against the code: every variable a service's loader asks for is in the table, and every
//! variable in the table is one the code reads. Each loader is run through a lookup that records what it asks.

use std::{cell::RefCell, collections::BTreeSet};

use ordermesh_config::FromEnv;

/// The services whose databases are named `<SERVICE>_…` in the table.
const SERVICES: [&str; 6] = ["CART", "CHECKOUT", "INVENTORY", "PAYMENT", "NOTIFIER", "GATEWAY"];

/// Read outside the loaders, at the start of every binary: logs and traces (`ordermesh-telemetry`'s `logs.rs`).
const READ_BY_TELEMETRY: [&str; 4] = ["RUST_LOG", "LOG_FORMAT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"];

/// Every variable named in the first column of the table, `<SERVICE>_…` spelt out for each service.
fn documented() -> BTreeSet<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md")).unwrap();
    let mut names = BTreeSet::new();
    for row in text.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap();
        for name in first.split('`').skip(1).step_by(2) {
            match name.strip_prefix("<SERVICE>_") {
                Some(rest) => names.extend(SERVICES.iter().map(|s| format!("{s}_{rest}"))),
                None => {
                    names.insert(name.to_owned());
                }
            }
        }
    }
    names
}

/// Every variable the six services' loaders (and the keys command's) ask for, none of them set.
fn asked() -> BTreeSet<String> {
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
    // The keys command's own setting.
    api_gateway::config::channels(&ordermesh_config::Env::from_fn(record)).unwrap();
    asked.into_inner()
}

#[test]
fn the_configuration_table_names_every_variable_the_services_read_and_no_other() {
    let documented = documented();
    let asked = asked();
    assert!(asked.len() > 40, "the loaders were not run: {asked:?}");
    // A secret may come from `<NAME>_FILE` instead (the table says so once, above it).
    let undocumented: Vec<&String> = asked
        .iter()
        .filter(|k| !documented.contains(*k))
        .filter(|k| k.strip_suffix("_FILE").is_none_or(|base| !documented.contains(base)))
        .collect();
    assert!(undocumented.is_empty(), "read by a service but not in docs/configuration.md: {undocumented:?}");
    let unread: Vec<&String> =
        documented.iter().filter(|k| !asked.contains(*k) && !READ_BY_TELEMETRY.contains(&k.as_str())).collect();
    assert!(unread.is_empty(), "in docs/configuration.md but read by no service: {unread:?}");
}
