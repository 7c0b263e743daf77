//! Hostile clients, bounded, on loopback (issue #13): each test starts the real binary in a
//! process of its own, attacks it, and asserts that it stays responsive (the known asset
//! answers on a fresh connection within [`PROBE_BOUND`]) and that its memory stays within the
//! budget stated here. The tests run one at a time (`service::serial`): they measure latency
//! and memory on two cores.
//!
//! `cargo test --test hostile`; the same attacks, timed against a quiet baseline, are the
//! "hostile" phase of `bench/run`.

mod connections;
mod service;

use std::time::Duration;

/// Longest a probe of the known asset may take during an attack (the debug build).
pub const PROBE_BOUND: Duration = Duration::from_secs(1);

/// Peak resident memory a flood of 1,000 endless request heads may add (each is cut off at the
/// 48 KiB head buffer): the goal, 100 MB, in MiB.
pub const HEADER_FLOOD_BUDGET_MIB: f64 = 95.0;
