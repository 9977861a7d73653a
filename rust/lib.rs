//! servekit's Rust core.
//!
//! The plain modules ([`hashing`], ...) hold the logic and know nothing of Python; `cargo test`
//! exercises them directly. [`bindings`] is the thin PyO3 layer that converts types, releases
//! the interpreter around long calls and maps [`error::CoreError`] to Python exceptions.

pub mod batching;
pub mod bindings;
pub mod error;
pub mod hashing;
pub mod jsonscan;
pub mod registry;
pub mod telemetry;

use pyo3::prelude::*;

/// The `servekit._core` extension module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    bindings::register(m)
}
