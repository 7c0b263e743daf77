//! Hostile clients, bounded, on loopback (issue #13): each test starts the real binary in a
//! process of its own, attacks it, and asserts that it stays responsive (the known asset
//! answers on a fresh connection within [`PROBE_BOUND`]) and that its memory stays within the
//! budget stated here. The tests run one at a time (`service::serial`): they measure latency
//! and memory on two cores.
//!
//! `cargo test --test hostile`; the same attacks, timed against a quiet baseline, are the
//! "hostile" phase of `bench/run`.

mod cache;
mod connections;
mod requests;
mod service;

use std::time::Duration;

/// Longest a probe of the known asset may take during an attack (the debug build).
pub const PROBE_BOUND: Duration = Duration::from_secs(1);

/// Peak resident memory a flood of 1,000 endless request heads may add (each is cut off at the
/// 48 KiB head buffer): the goal, 100 MB, in MiB.
pub const HEADER_FLOOD_BUDGET_MIB: f64 = 95.0;

/// Resident memory 300 slowloris or 1,100 idle connections may add while they are open.
pub const CONNECTION_FLOOD_BUDGET_MIB: f64 = 50.0;

/// Resident memory 10,000 requests with made-up methods and unknown paths may add.
pub const ODD_REQUEST_BUDGET_MIB: f64 = 20.0;

/// Peak resident memory 50,000 negative entries may add.
pub const NEGATIVE_FLOOD_BUDGET_MIB: f64 = 60.0;

/// What may stay resident once the 50,000 negative entries have expired.
pub const NEGATIVE_FLOOD_RETURNED_MIB: f64 = 10.0;
