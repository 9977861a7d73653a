//! The request queue: one FIFO per priority level, an index of queue deadlines, and Triton's
//! batch formation rule. Pure data; the scheduler holds it under its mutex.

use super::config::Config;
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
    /// Send the first `n` requests (priority then arrival order) as one batch now.
    Send(usize),
    /// Nothing to send before this instant unless the queue changes.
    WaitUntil(Instant),
    /// The queue is empty.
    Idle,
}

pub struct Queue<P> {
    levels: Vec<VecDeque<Entry<P>>>,
    deadlines: BTreeSet<(Instant, u64)>,
    len: usize,
}

impl<P: Payload> Queue<P> {
    pub fn new(levels: usize) -> Self {
        Queue {
            levels: (0..levels).map(|_| VecDeque::new()).collect(),
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

    pub fn push(&mut self, level: usize, entry: Entry<P>) {
        if let Some(d) = entry.deadline {
            self.deadlines.insert((d, entry.id));
        }
        self.levels[level].push_back(entry);
        self.len += 1;
    }

    /// Remove a queued request by id (cancellation); `None` when it is not queued.
    pub fn remove(&mut self, id: u64) -> Option<Entry<P>> {
        for level in &mut self.levels {
            if let Some(pos) = level.iter().position(|e| e.id == id) {
                let entry = level.remove(pos)?;
                if let Some(d) = entry.deadline {
                    self.deadlines.remove(&(d, id));
                }
                self.len -= 1;
                return Some(entry);
            }
        }
        None
    }

    /// Earliest queue deadline of any queued request.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(d, _)| d)
    }

    /// Remove and return every request whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Entry<P>> {
        let mut out = Vec::new();
        while let Some(&(d, id)) = self.deadlines.first() {
            if d > now {
                break;
            }
            match self.remove(id) {
                Some(e) => out.push(e),
                // Unreachable by construction (the index mirrors the queue); drop the stale key.
                None => {
                    self.deadlines.pop_first();
                }
            }
        }
        out
    }

    /// Remove everything (used when closing without draining).
    pub fn drain_all(&mut self) -> Vec<Entry<P>> {
        self.deadlines.clear();
        self.len = 0;
        self.levels.iter_mut().flat_map(|l| l.drain(..)).collect()
    }

    fn iter(&self) -> impl Iterator<Item = &Entry<P>> {
        self.levels.iter().flatten()
    }

    /// Remove the first `n` requests in priority then arrival order.
    pub fn take(&mut self, mut n: usize) -> Vec<Entry<P>> {
        let mut out = Vec::with_capacity(n);
        for level in &mut self.levels {
            let k = n.min(level.len());
            for e in level.drain(..k) {
                if let Some(d) = e.deadline {
                    self.deadlines.remove(&(d, e.id));
                }
                out.push(e);
            }
            n -= k;
            if n == 0 {
                break;
            }
        }
        self.len -= out.len();
        out
    }

    /// Triton's dynamic batch formation (`DynamicBatchScheduler::GetDynamicBatch`) for a free
    /// instance. Walk requests in priority then arrival order, stopping before one that would
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
        let mut q = Queue::new(1);
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
        let q: Queue<P> = Queue::new(1);
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
        let mut q = Queue::new(2);
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
        let mut q = Queue::new(1);
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
        assert_eq!(gone.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.take(5).len(), 1);
        assert_eq!(q.next_deadline(), None);
    }
}
