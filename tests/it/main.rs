//! The integration tests: one test binary (`cargo test --test it`), so that `support` is
//! compiled once. Each module is one area; filter by module, e.g.
//! `cargo test --test it -- faults::`.
//!
//! Every test shares this one process, so what is process-wide is shared too: the tracing
//! subscriber (`support::logs::capture` keeps one test's lines), the Prometheus recorder
//! (assert on increases, `support::metric`), the environment (a test that sets it runs alone in
//! a child process, `support::own_process`) and the current directory (no test changes it).

mod support;

mod abuse;
mod answers;
mod api;
mod architecture;
mod azure_ams;
mod azure_mkio;
mod azure_storage;
mod azurite_harness;
mod cache;
mod catalog_tools;
mod cli;
mod connections;
mod credentials;
mod default_credential;
mod deploy;
mod events;
mod fakes;
mod faults;
mod frontend;
mod generate_ffmpeg;
mod jobs;
mod jwt;
mod mkio;
mod observability;
mod openapi;
mod proxies;
mod resilience;
mod security;
mod shared_cache;
mod shutdown;
mod stable_links;
mod traces;
