//! Counters of a batcher, shaped after Triton's statistics extension.

use std::collections::BTreeMap;

/// Per-request timing, also delivered with each result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    /// From enqueue until its batch started.
    pub queue_ns: u64,
    /// Duration of its batch: concatenation and the runner call.
    pub compute_ns: u64,
    /// Rows in its batch.
    pub batch_size: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchSizeStats {
    pub count: u64,
    pub compute_ns: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests that received outputs.
    pub success: u64,
    /// Requests failed by their batch (model error) or by closing before they ran.
    pub fail: u64,
    /// Requests refused because the queue was full.
    pub queue_full: u64,
    /// Requests that expired in the queue and were rejected (timeout action REJECT).
    pub timeout: u64,
    /// Requests that expired in the queue and were moved behind their level (DELAY); they
    /// still run.
    pub delayed: u64,
    /// Requests removed from the queue by their caller.
    pub cancelled: u64,
    /// Rows run through the model.
    pub inference_count: u64,
    /// Batches run through the model.
    pub execution_count: u64,
    /// Sum over executed requests of their queue time.
    pub queue_ns: u64,
    /// Sum over executed requests of their batch's compute time.
    pub compute_ns: u64,
    /// Executions and compute time per batch size (rows).
    pub batch_sizes: BTreeMap<usize, BatchSizeStats>,
    /// Requests waiting now.
    pub queued: u64,
}

impl Stats {
    /// Record one executed batch of `rows` rows holding requests that waited `queue_ns` in total.
    pub fn record_batch(
        &mut self,
        rows: usize,
        requests: usize,
        queue_ns: u64,
        compute_ns: u64,
        ok: bool,
    ) {
        self.execution_count += 1;
        self.inference_count += rows as u64;
        self.queue_ns += queue_ns;
        self.compute_ns += compute_ns * requests as u64;
        let b = self.batch_sizes.entry(rows).or_default();
        b.count += 1;
        b.compute_ns += compute_ns;
        if ok {
            self.success += requests as u64;
        } else {
            self.fail += requests as u64;
        }
    }
}
