//! Settings of a dynamic batcher (Triton's `dynamic_batching` block plus instance count).

use crate::error::{CoreError, CoreResult};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Config {
    /// Largest number of rows in one batch; a request with more rows is refused.
    pub max_batch_size: usize,
    /// How long the oldest queued request may wait for a batch to fill; zero sends at once.
    pub max_queue_delay: Duration,
    /// Batch sizes (rows) sent as soon as they can be formed.
    pub preferred_batch_sizes: Vec<usize>,
    /// Most requests held in the queue; zero means unbounded.
    pub max_queue_size: usize,
    /// Queue timeout of a request that does not set its own; `None` waits forever.
    pub default_timeout: Option<Duration>,
    /// Number of priority levels; level 1 is served first, requests without one use the last.
    pub priority_levels: usize,
    /// Model instances (worker threads) running batches in parallel.
    pub instances: usize,
}

impl Config {
    /// A configuration with Triton's defaults around the one required setting.
    pub fn new(max_batch_size: usize) -> Self {
        Config {
            max_batch_size,
            max_queue_delay: Duration::ZERO,
            preferred_batch_sizes: Vec::new(),
            max_queue_size: 0,
            default_timeout: None,
            priority_levels: 1,
            instances: 1,
        }
    }

    /// Check every setting; the error names the bad value.
    pub fn validate(&self) -> CoreResult<()> {
        if self.max_batch_size == 0 {
            return Err(CoreError::invalid(
                "max_batch_size must be at least 1, got 0",
            ));
        }
        for &p in &self.preferred_batch_sizes {
            if p == 0 || p > self.max_batch_size {
                return Err(CoreError::invalid(format!(
                    "preferred batch size {p} must be between 1 and max_batch_size {}",
                    self.max_batch_size
                )));
            }
        }
        if self.priority_levels == 0 {
            return Err(CoreError::invalid(
                "priority_levels must be at least 1, got 0",
            ));
        }
        if self.instances == 0 {
            return Err(CoreError::invalid("instances must be at least 1, got 0"));
        }
        Ok(())
    }

    /// The largest preferred size, or `max_batch_size` when none is set.
    pub fn max_preferred(&self) -> usize {
        self.preferred_batch_sizes
            .iter()
            .copied()
            .max()
            .unwrap_or(self.max_batch_size)
    }

    /// Queue index of a request priority: 1 is the highest level, 0 (or none) the default,
    /// which is the lowest level.
    pub fn level(&self, priority: u32) -> CoreResult<usize> {
        let p = priority as usize;
        match p {
            0 => Ok(self.priority_levels - 1),
            p if p <= self.priority_levels => Ok(p - 1),
            p => Err(CoreError::invalid(format!(
                "priority {p} is out of range: this batcher has priority levels 1..={}",
                self.priority_levels
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_bad_values() {
        let mut c = Config::new(8);
        c.preferred_batch_sizes = vec![4, 9];
        assert!(c.validate().unwrap_err().to_string().contains("9"));
        assert!(Config::new(0).validate().is_err());
        let mut c = Config::new(8);
        c.instances = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn priority_levels_map_to_queue_indexes() {
        let mut c = Config::new(8);
        c.priority_levels = 3;
        assert_eq!(c.level(1).unwrap(), 0);
        assert_eq!(c.level(3).unwrap(), 2);
        assert_eq!(c.level(0).unwrap(), 2);
        assert!(c.level(4).unwrap_err().to_string().contains("priority 4"));
    }
}
