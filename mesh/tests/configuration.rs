//! docs/configuration.md against the code: every variable a service's loader asks for is in the table, and every
//! variable in the table is one the code reads. Each loader is run through a lookup that records what it asks.

use std::collections::BTreeSet;

#[path = "support/workspace.rs"]
mod workspace;

/// The services whose databases are named `<SERVICE>_…` in the table.
const SERVICES: [&str; 6] = ["CART", "CHECKOUT", "INVENTORY", "PAYMENT", "NOTIFIER", "GATEWAY"];

/// Every variable named in the first column of the table, `<SERVICE>_…` spelt out for each service.
fn documented() -> BTreeSet<String> {
    let text = std::fs::read_to_string(workspace::root().join("docs/configuration.md")).unwrap();
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

#[test]
fn the_configuration_table_names_every_variable_the_services_read_and_no_other() {
    let documented = documented();
    let read = workspace::read_variables();
    // A secret may come from `<NAME>_FILE` instead (the table says so once, above it).
    let undocumented: Vec<&String> = read
        .iter()
        .filter(|k| !documented.contains(*k))
        .filter(|k| k.strip_suffix("_FILE").is_none_or(|base| !documented.contains(base)))
        .collect();
    assert!(undocumented.is_empty(), "read by a service but not in docs/configuration.md: {undocumented:?}");
    let unread: Vec<&String> = documented.iter().filter(|k| !read.contains(*k)).collect();
    assert!(unread.is_empty(), "in docs/configuration.md but read by no service: {unread:?}");
}
