//! Operators' tools that look at a running mesh from outside, shared by `ordermesh` and the deployment's health
//! checks: [`audit`] checks the promises across the services' databases and the broker, [`probe`] asks one
//! service whether it is healthy.

pub mod audit;
pub mod probe;
