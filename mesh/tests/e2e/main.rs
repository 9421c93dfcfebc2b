//! End-to-end tests: the four real services in-process, over the real RabbitMQ and PostgreSQL, with
//! HTTP and gRPC on port 0. Each test has its own databases and its own queue and exchange names.

mod auth;
mod bench;
mod checkout_flow;
mod concurrency;
mod dashboard;
mod docs;
mod faults;
mod helpers;
mod holes;
mod input;
mod lost;
mod metrics;
mod notify;
mod overload;
mod queues;
mod replicas;
