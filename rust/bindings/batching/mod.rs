//! Bindings of [`crate::batching`]: numpy arrays in and out of Rust-owned tensors, the Python
//! runner as the batch executor, and delivery to asyncio futures or blocked threads.
//!
//! Interpreter use per batch: instance threads concatenate without it, attach once to wrap the
//! batch inputs (zero-copy) and call `runner.run`, keeping its output arrays. Results for
//! asyncio callers go to the caller loop's [`Mailbox`]; the loop makes each request's outputs
//! as views of its rows of those arrays (zero-copy) and resolves the awaitables, so
//! delivering needs no second attach here.
//!
//! One job per file: [`convert`] (numpy <-> tensors), [`executor`] (the runner as the
//! batcher's executor and the replies), [`pending`] (the awaitable), [`mailbox`] (the
//! completion mailbox as a Python object), [`batcher`] (the `Batcher` class).

mod batcher;
mod convert;
mod executor;
mod mailbox;
mod pending;

use pyo3::prelude::*;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<batcher::PyBatcher>()?;
    m.add_class::<pending::PyPending>()?;
    pending::install_pending_send(m.py());
    m.add_class::<mailbox::PyMailbox>()?;
    Ok(())
}
