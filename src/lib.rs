//! messagebox: a Rust MessageBox server, a drop-in for the TypeScript original.
//!
//! The library holds every part of the server so that the binary, the integration tests,
//! the benchmarks and the load generator (`perf/`) share one implementation.

pub mod admin;
pub mod api;
pub mod auth;
pub mod client;
pub mod config;
pub mod domain;
pub mod fleet;
pub mod http;
pub mod json;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod outbound;
pub mod payments;
pub mod push;
pub mod server;
pub mod startup;
pub mod store;
