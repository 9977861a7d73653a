//! Bindings of [`crate::jsonscan`].

use crate::jsonscan;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The nesting depth of JSON `text` (a bytes object), scanned in constant memory.
///
/// The scan holds the interpreter: it reads the bytes object in place, and a bytes object
/// cannot change while it is held (about a millisecond per MB).
#[pyfunction]
fn json_nesting_depth(text: &Bound<'_, PyBytes>) -> usize {
    jsonscan::nesting_depth(text.as_bytes())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(json_nesting_depth, m)?)?;
    Ok(())
}
