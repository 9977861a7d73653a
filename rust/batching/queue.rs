//! The request queue: per priority level a FIFO of requests and a FIFO of delayed ones, an
//! index of queue deadlines, and Triton's batch formation rule. Pure data; the scheduler holds
//! it under its mutex.
//!
//! Invariants (Triton's `PriorityQueue` / `PolicyQueue` in `scheduler_utils.cc`):
//! - Requests are served in level order (1 first); within a level, its normal queue in arrival
//!   order, then its delayed queue in the order the requests timed out.
//! - A request whose deadline passes leaves its level's normal queue: under REJECT it is
//!   returned to be failed, under DELAY it moves to the back of the level's delayed queue and
//!   has no deadline any more (it is never rejected later).
//! - A level holds at most its policy's `max_queue_size` requests, delayed ones included.
//! - `deadlines` holds exactly the `(deadline, id)` of every request in a normal queue that has
//!   a deadline, and `len` counts every queued request.

use super::config::{Config, TimeoutAction};
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// What the scheduler needs to know about a request's contents.
pub trait Payload: Send + 'static {
    /// Rows this request contributes to a batch (its own batch dimension).
    fn rows(&self) -> usize;
    /// Whether this request may share a batch with `other` (same inputs, dtypes and
    /// non-batch dimensions).
    fn batches_with(&self, other: &Self) -> bool;
}

pub struct Entry<P> {
    pub id: u64,
    pub payload: P,
    pub enqueued: Instant,
    pub deadline: Option<Instant>,
}

/// The decision of [`Queue::decide`].
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send the first `n` requests (in serving order) as one batch now.
    Send(usize),
    /// Nothing to send before this instant unless the queue changes.
    WaitUntil(Instant),
    /// The queue is empty.
    Idle,
}

/// What [`Queue::expire`] did.
pub struct Expired<P> {
    /// REJECT requests that timed out, removed from the queue: fail them.
    pub rejected: Vec<Entry<P>>,
    /// How many DELAY requests moved to their level's delayed queue.
    pub delayed: usize,
}

/// One priority level: its policy's bound and timeout action, and its two FIFOs.
struct Level<P> {
    max_size: usize,
    action: TimeoutAction,
    queue: VecDeque<Entry<P>>,
    delayed: VecDeque<Entry<P>>,
}

impl<P> Level<P> {
    fn len(&self) -> usize {
        self.queue.len() + self.delayed.len()
    }

    fn iter(&self) -> impl Iterator<Item = &Entry<P>> {
        self.queue.iter().chain(self.delayed.iter())
    }
}

pub struct Queue<P> {
    levels: Vec<Level<P>>,
    deadlines: BTreeSet<(Instant, u64)>,
    len: usize,
}

impl<P: Payload> Queue<P> {
    /// An empty queue with one level per priority level of `cfg`, each under its policy.
    pub fn new(cfg: &Config) -> Self {
        Queue {
            levels: (0..cfg.priority_levels)
                .map(|i| Level {
                    max_size: cfg.policy(i).max_queue_size,
                    action: cfg.policy(i).timeout_action,
                    queue: VecDeque::new(),
                    delayed: VecDeque::new(),
                })
                .collect(),
            deadlines: BTreeSet::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `level` holds as many requests as its policy allows (never, when unbounded).
    pub fn is_full(&self, level: usize) -> bool {
        let l = &self.levels[level];
        l.max_size > 0 && l.len() >= l.max_size
    }

    /// Requests queued at `level` (delayed ones included).
    pub fn level_len(&self, level: usize) -> usize {
        self.levels[level].len()
    }

    /// Queue `entry` at the back of `level`'s normal queue; the caller checks
    /// [`Queue::is_full`] first.
    pub fn push(&mut self, level: usize, entry: Entry<P>) {
        if let Some(d) = entry.deadline {
            self.deadlines.insert((d, entry.id));
        }
        self.levels[level].queue.push_back(entry);
        self.len += 1;
    }

    /// Remove a queued request by id (cancellation); `None` when it is not queued.
    pub fn remove(&mut self, id: u64) -> Option<Entry<P>> {
        for level in &mut self.levels {
            for fifo in [&mut level.queue, &mut level.delayed] {
                if let Some(pos) = fifo.iter().position(|e| e.id == id) {
                    let entry = fifo.remove(pos)?;
                    if let Some(d) = entry.deadline {
                        self.deadlines.remove(&(d, id));
                    }
                    self.len -= 1;
                    return Some(entry);
                }
            }
        }
        None
    }

    /// Earliest queue deadline of any queued request.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(d, _)| d)
    }

    /// Apply the timeout action of every request whose deadline is at or before `now`: DELAY
    /// requests move to the back of their level's delayed queue (those expiring together in
    /// arrival order); REJECT requests are removed and returned, to be failed.
    pub fn expire(&mut self, now: Instant) -> Expired<P> {
        let mut expired = Vec::new();
        while let Some(&(d, id)) = self.deadlines.first() {
            if d > now {
                break;
            }
            self.deadlines.pop_first();
            // The index mirrors the normal queues, so the request is found in one of them.
            let found = self.levels.iter_mut().enumerate().find_map(|(i, l)| {
                let pos = l.queue.iter().position(|e| e.id == id)?;
                Some((i, l.queue.remove(pos)?))
            });
            if let Some(found) = found {
                expired.push(found);
            }
        }
        // Ids are taken in submission order: requests expiring in one call keep that order.
        expired.sort_by_key(|(_, e)| e.id);
        let mut out = Expired {
            rejected: Vec::new(),
            delayed: 0,
        };
        for (i, mut entry) in expired {
            match self.levels[i].action {
                TimeoutAction::Delay => {
                    entry.deadline = None;
                    self.levels[i].delayed.push_back(entry);
                    out.delayed += 1;
                }
                TimeoutAction::Reject => {
                    self.len -= 1;
                    out.rejected.push(entry);
                }
            }
        }
        out
    }

    /// Remove everything (used when closing without draining).
    pub fn drain_all(&mut self) -> Vec<Entry<P>> {
        self.deadlines.clear();
        self.len = 0;
        self.levels
            .iter_mut()
            .flat_map(|l| {
                let mut all: Vec<Entry<P>> = l.queue.drain(..).collect();
                all.extend(l.delayed.drain(..));
                all
            })
            .collect()
    }

    /// Every queued request in serving order: by level, normal queue before delayed queue.
    fn iter(&self) -> impl Iterator<Item = &Entry<P>> {
        self.levels.iter().flat_map(Level::iter)
    }

    /// Remove the first `n` requests in serving order.
    pub fn take(&mut self, mut n: usize) -> Vec<Entry<P>> {
        let mut out = Vec::with_capacity(n);
        'levels: for level in &mut self.levels {
            for fifo in [&mut level.queue, &mut level.delayed] {
                let k = n.min(fifo.len());
                for e in fifo.drain(..k) {
                    if let Some(d) = e.deadline {
                        self.deadlines.remove(&(d, e.id));
                    }
                    out.push(e);
                }
                n -= k;
                if n == 0 {
                    break 'levels;
                }
            }
        }
        self.len -= out.len();
        out
    }

    /// Triton's dynamic batch formation (`DynamicBatchScheduler::GetDynamicBatch`) for a free
    /// instance. Walk requests in serving order, stopping before one that would
    /// exceed `max_batch_size` or cannot share the batch (both mean "send now"). Remember the
    /// largest preferred size reached, or the cut just before the largest preferred size would
    /// be exceeded. Send that cut at once unless the oldest walked request's delay has run out,
    /// in which case send everything walked; send everything walked when the batch is full, the
    /// next request cannot join, the delay is zero or `flush` is set (closing); otherwise wait
    /// until the oldest walked request has waited `max_queue_delay`.
    pub fn decide(&self, cfg: &Config, now: Instant, flush: bool) -> Decision {
        let mut walk = self.iter();
        let Some(first) = walk.next() else {
            return Decision::Idle;
        };
        let max_pref = cfg.max_preferred();
        let mut rows = first.payload.rows();
        let mut count = 1;
        let mut oldest = first.enqueued;
        let mut best = cfg.preferred_batch_sizes.contains(&rows).then_some(count);
        let mut send_now = false;
        for e in walk {
            let r = e.payload.rows();
            if rows + r > max_pref && best.is_none() {
                best = Some(count);
            }
            if rows + r > cfg.max_batch_size || !first.payload.batches_with(&e.payload) {
                send_now = true;
                break;
            }
            rows += r;
            count += 1;
            oldest = oldest.min(e.enqueued);
            if cfg.preferred_batch_sizes.contains(&rows) {
                best = Some(count);
            }
        }
        let delay = cfg.max_queue_delay;
        let waited = now.saturating_duration_since(oldest);
        let delay_exceeded = delay > Duration::ZERO && waited >= delay;
        if let Some(n) = best {
            if !delay_exceeded {
                return Decision::Send(n);
            }
        }
        if send_now || rows >= cfg.max_batch_size || delay_exceeded || delay.is_zero() || flush {
            return Decision::Send(count);
        }
        Decision::WaitUntil(oldest + delay)
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::QueuePolicy;
    use super::*;

    /// A payload of `rows` rows and a shape key; equal keys batch together.
    struct P(usize, u32);
    impl Payload for P {
        fn rows(&self) -> usize {
            self.0
        }
        fn batches_with(&self, other: &Self) -> bool {
            self.1 == other.1
        }
    }

    fn cfg(max: usize, delay_us: u64, preferred: &[usize]) -> Config {
        let mut c = Config::new(max);
        c.max_queue_delay = Duration::from_micros(delay_us);
        c.preferred_batch_sizes = preferred.to_vec();
        c
    }

    fn queue(t0: Instant, reqs: &[(usize, u32)]) -> Queue<P> {
        let mut q = Queue::new(&Config::new(8));
        for (i, &(rows, key)) in reqs.iter().enumerate() {
            q.push(
                0,
                Entry {
                    id: i as u64,
                    payload: P(rows, key),
                    enqueued: t0 + Duration::from_micros(i as u64),
                    deadline: None,
                },
            );
        }
        q
    }

    #[test]
    fn empty_queue_is_idle() {
        let q: Queue<P> = Queue::new(&Config::new(4));
        assert_eq!(
            q.decide(&cfg(4, 0, &[]), Instant::now(), false),
            Decision::Idle
        );
    }

    #[test]
    fn zero_delay_sends_whatever_is_queued() {
        let t0 = Instant::now();
        let q = queue(t0, &[(1, 0), (2, 0)]);
        assert_eq!(q.decide(&cfg(8, 0, &[]), t0, false), Decision::Send(2));
    }

    #[test]
    fn waits_for_the_oldest_request_delay_then_sends() {
        let t0 = Instant::now();
        let q = queue(t0, &[(1, 0), (1, 0)]);
        let c = cfg(8, 1000, &[]);
        let at = t0 + Duration::from_micros(10);
        assert_eq!(
            q.decide(&c, at, false),
            Decision::WaitUntil(t0 + Duration::from_micros(1000))
        );
        let later = t0 + Duration::from_micros(1000);
        assert_eq!(q.decide(&c, later, false), Decision::Send(2));
        assert_eq!(
            q.decide(&c, at, true),
            Decision::Send(2),
            "flush ignores the delay"
        );
    }

    #[test]
    fn full_batch_goes_at_once_and_overflow_stays() {
        let t0 = Instant::now();
        let q = queue(t0, &[(2, 0), (2, 0), (1, 0)]);
        assert_eq!(
            q.decide(&cfg(4, 1_000_000, &[]), t0, false),
            Decision::Send(2)
        );
        let q = queue(t0, &[(2, 0), (2, 0)]);
        assert_eq!(
            q.decide(&cfg(4, 1_000_000, &[]), t0, false),
            Decision::Send(2)
        );
    }

    #[test]
    fn next_request_that_would_exceed_max_sends_now() {
        let t0 = Instant::now();
        let q = queue(t0, &[(2, 0), (3, 0)]);
        assert_eq!(
            q.decide(&cfg(4, 1_000_000, &[]), t0, false),
            Decision::Send(1)
        );
    }

    #[test]
    fn different_shapes_are_never_mixed_and_send_now() {
        let t0 = Instant::now();
        let q = queue(t0, &[(1, 0), (1, 0), (1, 7), (1, 0)]);
        assert_eq!(
            q.decide(&cfg(8, 1_000_000, &[]), t0, false),
            Decision::Send(2)
        );
    }

    #[test]
    fn preferred_size_goes_at_once() {
        let t0 = Instant::now();
        let c = cfg(16, 1_000_000, &[4, 8]);
        assert_eq!(
            queue(t0, &[(1, 0); 3]).decide(&c, t0, false),
            Decision::WaitUntil(t0 + Duration::from_secs(1))
        );
        assert_eq!(
            queue(t0, &[(1, 0); 5]).decide(&c, t0, false),
            Decision::Send(4)
        );
        assert_eq!(
            queue(t0, &[(1, 0); 10]).decide(&c, t0, false),
            Decision::Send(8)
        );
        // A multi-row request can jump over a preferred size: cut before exceeding the largest.
        assert_eq!(
            queue(t0, &[(3, 0), (3, 0), (3, 0), (3, 0)]).decide(&c, t0, false),
            Decision::Send(2)
        );
    }

    #[test]
    fn expired_delay_sends_everything_that_fits_even_past_preferred() {
        let t0 = Instant::now();
        let c = cfg(16, 1000, &[4]);
        let late = t0 + Duration::from_millis(5);
        assert_eq!(
            queue(t0, &[(1, 0); 6]).decide(&c, late, false),
            Decision::Send(6)
        );
    }

    #[test]
    fn priority_levels_are_walked_first() {
        let t0 = Instant::now();
        let mut c = Config::new(8);
        c.priority_levels = 2;
        let mut q = Queue::new(&c);
        for (id, level) in [(0, 1), (1, 1), (2, 0)] {
            q.push(
                level,
                Entry {
                    id,
                    payload: P(1, 0),
                    enqueued: t0,
                    deadline: None,
                },
            );
        }
        let ids: Vec<u64> = q.take(2).iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![2, 0]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn expire_and_remove_keep_the_deadline_index_in_step() {
        let t0 = Instant::now();
        let mut q = Queue::new(&Config::new(8));
        for id in 0..3u64 {
            let deadline = Some(t0 + Duration::from_millis(id + 1));
            q.push(
                0,
                Entry {
                    id,
                    payload: P(1, 0),
                    enqueued: t0,
                    deadline,
                },
            );
        }
        assert!(q.remove(0).is_some());
        assert!(q.remove(0).is_none());
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(2)));
        let gone = q.expire(t0 + Duration::from_millis(2));
        assert_eq!(ids(&gone.rejected), vec![1]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.take(5).len(), 1);
        assert_eq!(q.next_deadline(), None);
    }

    fn entry(id: u64, deadline: Option<Instant>) -> Entry<P> {
        Entry {
            id,
            payload: P(1, 0),
            enqueued: Instant::now(),
            deadline,
        }
    }

    fn ids(entries: &[Entry<P>]) -> Vec<u64> {
        entries.iter().map(|e| e.id).collect()
    }

    /// Two levels; the default policy (level 2) has `action`, level 1 its own `own`.
    fn two_levels(action: TimeoutAction, own: QueuePolicy) -> Config {
        let mut c = Config::new(8);
        c.priority_levels = 2;
        c.default_policy.timeout_action = action;
        c.level_policies.insert(1, own);
        c
    }

    #[test]
    fn a_delayed_request_runs_after_its_level_and_before_lower_levels() {
        let t0 = Instant::now();
        let delay = QueuePolicy {
            timeout_action: TimeoutAction::Delay,
            ..QueuePolicy::default()
        };
        let mut q = Queue::new(&two_levels(TimeoutAction::Delay, delay));
        q.push(0, entry(1, Some(t0 + Duration::from_millis(1))));
        q.push(0, entry(2, None));
        q.push(1, entry(3, None));
        let expired = q.expire(t0 + Duration::from_millis(2));
        assert!(expired.rejected.is_empty(), "DELAY rejects nothing");
        assert_eq!(expired.delayed, 1);
        assert_eq!((q.len(), q.level_len(0)), (3, 2));
        assert_eq!(
            q.next_deadline(),
            None,
            "a delayed request has no deadline any more"
        );
        q.push(0, entry(4, None));
        assert_eq!(ids(&q.take(4)), vec![2, 4, 1, 3]);
        assert!(q.is_empty());
    }

    #[test]
    fn the_decision_walks_delayed_requests_last_in_their_level() {
        let t0 = Instant::now();
        let mut c = Config::new(2);
        c.default_policy.timeout_action = TimeoutAction::Delay;
        let mut q = Queue::new(&c);
        q.push(0, entry(1, Some(t0)));
        q.push(0, entry(2, None));
        q.push(0, entry(3, None));
        q.expire(t0);
        assert_eq!(q.decide(&c, t0, false), Decision::Send(2));
        assert_eq!(ids(&q.take(2)), vec![2, 3]);
        assert_eq!(ids(&q.take(1)), vec![1]);
    }

    #[test]
    fn each_level_applies_its_own_timeout_action() {
        let t0 = Instant::now();
        let reject = QueuePolicy::default();
        let mut q = Queue::new(&two_levels(TimeoutAction::Delay, reject));
        let at = Some(t0 + Duration::from_millis(1));
        q.push(0, entry(1, at));
        q.push(1, entry(2, at));
        q.push(1, entry(3, None));
        let expired = q.expire(t0 + Duration::from_millis(1));
        assert_eq!((ids(&expired.rejected), expired.delayed), (vec![1], 1));
        assert_eq!(q.len(), 2);
        assert_eq!(ids(&q.take(2)), vec![3, 2]);
    }

    #[test]
    fn requests_expiring_together_are_delayed_in_arrival_order() {
        let t0 = Instant::now();
        let mut c = Config::new(8);
        c.default_policy.timeout_action = TimeoutAction::Delay;
        let mut q = Queue::new(&c);
        // Later arrivals with earlier deadlines (request overrides).
        q.push(0, entry(1, Some(t0 + Duration::from_millis(3))));
        q.push(0, entry(2, Some(t0 + Duration::from_millis(2))));
        q.push(0, entry(3, Some(t0 + Duration::from_millis(1))));
        q.push(0, entry(4, Some(t0 + Duration::from_millis(9))));
        q.expire(t0 + Duration::from_millis(1));
        q.expire(t0 + Duration::from_millis(5));
        // 3 timed out first; 1 and 2 together, so in arrival order; 4 has not timed out.
        assert_eq!(ids(&q.take(4)), vec![4, 3, 1, 2]);
    }

    #[test]
    fn each_level_is_bounded_by_its_own_policy_delayed_requests_included() {
        let t0 = Instant::now();
        let own = QueuePolicy {
            max_queue_size: 1,
            timeout_action: TimeoutAction::Delay,
            ..QueuePolicy::default()
        };
        let mut c = two_levels(TimeoutAction::Reject, own);
        c.default_policy.max_queue_size = 2;
        let mut q = Queue::new(&c);
        assert!(!q.is_full(0));
        q.push(0, entry(1, Some(t0)));
        assert!(q.is_full(0) && !q.is_full(1));
        q.expire(t0);
        assert!(q.is_full(0), "the delayed request still counts");
        q.push(1, entry(2, None));
        assert!(!q.is_full(1));
        q.push(1, entry(3, None));
        assert!(q.is_full(1));
        assert!(
            !Queue::<P>::new(&Config::new(8)).is_full(0),
            "0 is unbounded"
        );
    }

    #[test]
    fn delayed_requests_can_be_cancelled_and_drained() {
        let t0 = Instant::now();
        let mut c = Config::new(8);
        c.default_policy.timeout_action = TimeoutAction::Delay;
        let mut q = Queue::new(&c);
        q.push(0, entry(1, Some(t0)));
        q.push(0, entry(2, Some(t0)));
        q.push(0, entry(3, None));
        q.expire(t0);
        assert_eq!(q.remove(1).map(|e| e.id), Some(1));
        assert_eq!(q.len(), 2);
        assert_eq!(ids(&q.drain_all()), vec![3, 2]);
        assert!(q.is_empty());
    }
}
