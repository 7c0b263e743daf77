//! The integration tests: one test binary (`cargo test --test it`), so that `support` is
//! compiled once. Each module is one area; filter by module, e.g.
//! `cargo test --test it -- faults::`.

mod support;

mod api;
mod azure_ams;
mod azure_mkio;
mod azure_storage;
mod azurite_harness;
mod cache;
mod cli;
mod credentials;
mod fakes;
mod faults;
mod frontend;
mod jobs;
mod jwt;
mod mkio;
mod openapi;
mod resilience;
mod security;
mod shutdown;
