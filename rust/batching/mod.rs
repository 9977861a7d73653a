//! Dynamic request batching with Triton's batch-formation semantics.
//!
//! [`Batcher`] queues requests by priority level, each under its [`QueuePolicy`] (bound,
//! timeout, REJECT or DELAY on timeout), forms batches with [`Queue::decide`] and runs them
//! on instance threads through an [`Executor`]; [`tensor`] concatenates request
//! tensors by rows; [`Mailbox`] wakes an event loop when results are ready. Nothing here knows
//! Python: the binding implements [`Executor`] around the user's runner.

mod config;
mod mailbox;
mod queue;
mod scheduler;
mod stats;
pub mod tensor;

#[cfg(test)]
mod tests;

pub use config::{Config, QueuePolicy, TimeoutAction};
pub use mailbox::Mailbox;
pub use queue::{Decision, Entry, Expired, Payload, Queue};
pub use scheduler::{Batcher, Done, Executor, QUEUE_FULL, TIMEOUT};
pub use stats::{BatchSizeStats, Stats, Timing};
