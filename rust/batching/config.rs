//! Settings of a dynamic batcher (Triton's `dynamic_batching` block plus instance count).

use crate::error::{CoreError, CoreResult};
use std::collections::BTreeMap;
use std::time::Duration;

/// What happens to a request whose queue timeout expires (Triton's `ModelQueuePolicy`
/// `timeout_action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeoutAction {
    /// Fail it with "Request timeout expired".
    #[default]
    Reject,
    /// Keep it, behind every request of its level that has not timed out: it runs once its
    /// level's normal queue is empty (and before any lower level).
    Delay,
}

impl TimeoutAction {
    /// The action named as in Triton's configuration ("REJECT" or "DELAY").
    pub fn from_name(name: &str) -> CoreResult<Self> {
        match name {
            "REJECT" => Ok(TimeoutAction::Reject),
            "DELAY" => Ok(TimeoutAction::Delay),
            other => Err(CoreError::invalid(format!(
                "timeout_action must be REJECT or DELAY, got {other:?}"
            ))),
        }
    }
}

/// One priority level's queue policy (Triton's `ModelQueuePolicy`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueuePolicy {
    /// Most requests held at this level (timed-out DELAY requests included); zero means
    /// unbounded.
    pub max_queue_size: usize,
    /// Queue timeout of a request at this level; `None` waits forever.
    pub default_timeout: Option<Duration>,
    /// Whether a request may shorten `default_timeout` with its own timeout.
    pub allow_timeout_override: bool,
    pub timeout_action: TimeoutAction,
}

impl QueuePolicy {
    /// The queue timeout of a request that asked for `requested` (`None` or zero: nothing).
    ///
    /// Triton's `PolicyQueue::Enqueue`: the level's default, or the request's own when the
    /// policy allows overrides and it is shorter (a request never lengthens the default).
    /// Where the level has no default, servekit applies the request's own timeout (Triton
    /// ignores it there), so `timeout` on a model without a queue policy still means
    /// something.
    pub fn timeout(&self, requested: Option<Duration>) -> Option<Duration> {
        let requested = requested.filter(|t| !t.is_zero());
        match (self.default_timeout, requested) {
            (None, r) => r,
            (Some(d), Some(r)) if self.allow_timeout_override => Some(d.min(r)),
            (Some(d), _) => Some(d),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Largest number of rows in one batch; a request with more rows is refused.
    pub max_batch_size: usize,
    /// How long the oldest queued request may wait for a batch to fill; zero sends at once.
    pub max_queue_delay: Duration,
    /// Batch sizes (rows) sent as soon as they can be formed.
    pub preferred_batch_sizes: Vec<usize>,
    /// Policy of every level without its own entry in `level_policies`.
    pub default_policy: QueuePolicy,
    /// Policies of single priority levels (Triton's `priority_queue_policy`), keyed by the
    /// level (1 ..= `priority_levels`).
    pub level_policies: BTreeMap<usize, QueuePolicy>,
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
            default_policy: QueuePolicy::default(),
            level_policies: BTreeMap::new(),
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
        if let Some(&level) = self
            .level_policies
            .keys()
            .find(|&&l| l == 0 || l > self.priority_levels)
        {
            return Err(CoreError::invalid(format!(
                "a queue policy for priority level {level} is out of range: this batcher has \
                 priority levels 1..={}",
                self.priority_levels
            )));
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

    /// The queue policy of queue index `index` (from [`Config::level`]).
    pub fn policy(&self, index: usize) -> &QueuePolicy {
        self.level_policies
            .get(&(index + 1))
            .unwrap_or(&self.default_policy)
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

    #[test]
    fn levels_without_a_policy_use_the_default() {
        let mut c = Config::new(8);
        c.priority_levels = 3;
        c.default_policy.max_queue_size = 5;
        let own = QueuePolicy {
            max_queue_size: 1,
            ..QueuePolicy::default()
        };
        c.level_policies.insert(2, own.clone());
        c.validate().unwrap();
        assert_eq!(c.policy(c.level(2).unwrap()), &own);
        assert_eq!(c.policy(c.level(1).unwrap()).max_queue_size, 5);
        assert_eq!(c.policy(c.level(0).unwrap()).max_queue_size, 5);
        c.level_policies.insert(4, own);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("priority level 4"), "{err}");
    }

    #[test]
    fn timeout_actions_are_named_as_in_triton() {
        assert_eq!(
            TimeoutAction::from_name("DELAY").unwrap(),
            TimeoutAction::Delay
        );
        assert_eq!(
            TimeoutAction::from_name("REJECT").unwrap(),
            TimeoutAction::Reject
        );
        let err = TimeoutAction::from_name("delay").unwrap_err().to_string();
        assert!(err.contains("REJECT or DELAY"), "{err}");
    }

    #[test]
    fn timeout_override_rules() {
        let ms = Duration::from_millis;
        let mut p = QueuePolicy::default();
        // No default: the request's own timeout, if any.
        assert_eq!(p.timeout(None), None);
        assert_eq!(p.timeout(Some(ms(0))), None);
        assert_eq!(p.timeout(Some(ms(7))), Some(ms(7)));
        // A default without override: the default, whatever the request asks.
        p.default_timeout = Some(ms(10));
        assert_eq!(p.timeout(None), Some(ms(10)));
        assert_eq!(p.timeout(Some(ms(3))), Some(ms(10)));
        // With override: the request may shorten the default, never lengthen or remove it.
        p.allow_timeout_override = true;
        assert_eq!(p.timeout(Some(ms(3))), Some(ms(3)));
        assert_eq!(p.timeout(Some(ms(30))), Some(ms(10)));
        assert_eq!(p.timeout(Some(ms(0))), Some(ms(10)));
    }
}
