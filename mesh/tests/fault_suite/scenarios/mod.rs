//! One module per scenario of the fault suite's single-node run, in the order it runs them: each injects its
//! fault under a stream of shoppers and records its row.

pub(crate) mod broker_restart;
pub(crate) mod database_restart;
pub(crate) mod duplicates;
pub(crate) mod flaky_payment;
pub(crate) mod inventory_beyond_budget;
pub(crate) mod notifier_mid_send;
pub(crate) mod poison;
pub(crate) mod reservation_expiry;
pub(crate) mod shutdown;
