//! The table the fault suite prints and writes to `target/`: one row per scenario, as in docs/testing.md.

use std::{fmt::Write as _, time::Instant};

/// One scenario's line.
pub(crate) struct Row {
    pub(crate) fault: &'static str,
    pub(crate) injected: &'static str,
    pub(crate) in_flight: String,
    pub(crate) checked: &'static str,
    pub(crate) result: String,
    pub(crate) recovery: String,
}

/// The rows as a Markdown table, with the whole suite's time under it.
pub(crate) fn markdown(rows: &[Row], started: Instant) -> String {
    let mut table = String::from(
        "| fault | how injected | checkouts in flight at the fault | what was checked | result | recovery |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} |",
            r.fault, r.injected, r.in_flight, r.checked, r.result, r.recovery
        );
    }
    let _ = writeln!(table, "\nWhole suite: {:.0} s.", started.elapsed().as_secs_f64());
    table
}
