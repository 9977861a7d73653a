//! PyO3 binding layer: type conversion, interpreter release and error mapping only.

mod batching;
mod errors;
mod hashing;
mod jsonscan;
mod registry;
mod telemetry;

pub use errors::enter;

use pyo3::prelude::*;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    hashing::register(m)?;
    registry::register(m)?;
    telemetry::register(m)?;
    batching::register(m)?;
    jsonscan::register(m)?;
    Ok(())
}
