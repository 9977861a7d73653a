//! Telemetry: drift windows over binned features and predictions, drift statistics, and
//! sliding-window latency sketches. Plain Rust; the bindings live in `bindings/telemetry.rs`.
//!
//! Hot path ([`window::BinnedWindow::record`], [`sketch::SlidingSketch::record`]): O(log bins)
//! per value, no allocation, fixed-size state. Off the hot path ([`stats::drift_stats`],
//! [`sketch::SlidingSketch::quantile`]): O(bins) per column.

pub mod sketch;
pub mod stats;
pub mod window;

pub use sketch::SlidingSketch;
pub use stats::{drift_stats, DriftStats};
pub use window::{BinnedWindow, Binner, ToF64, WindowSpec};
