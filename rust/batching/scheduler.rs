//! The dynamic batcher: a priority queue under one mutex, instance threads that form and run
//! batches, and a timer thread that expires queued requests on time.
//!
//! Instance threads follow the leader/follower pattern: at most one idle instance (the leader)
//! watches the queue and forms the next batch with [`Queue::decide`], waiting on a condition
//! variable until the decision's deadline (monotonic [`Instant`]) or until a request arrives;
//! the other idle instances wait their turn. When the leader takes a batch it hands leadership
//! to a follower and runs the batch. So a batch forms exactly when an instance is free, with one
//! thread hand-off between a request's arrival and its batch starting. Nothing sleeps or polls.

use super::config::Config;
use super::queue::{Decision, Entry, Payload, Queue};
use super::stats::{Stats, Timing};
use crate::error::{CoreError, CoreResult};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Message of requests refused when the queue is full (Triton's wording).
pub const QUEUE_FULL: &str = "Exceeds maximum queue size";
/// Message of requests that expired in the queue (Triton's wording).
pub const TIMEOUT: &str = "Request timeout expired";

/// Runs batches and hands results back; implemented by the Python binding.
pub trait Executor: Send + Sync + 'static {
    type Payload: Payload;
    type Output: Send;
    /// Run one batch; on success return one output per request, in order.
    fn run(&self, batch: &[Self::Payload]) -> CoreResult<Vec<Self::Output>>;
    /// Deliver finished requests (results, model errors, timeouts, refusals on close).
    fn complete(&self, done: Vec<Done<Self::Payload, Self::Output>>);
    /// Run the whole body of an instance thread; lets an executor set up per-thread state
    /// once (the binding keeps one interpreter thread state per instance).
    fn instance_thread(&self, body: &mut (dyn FnMut() + Send)) {
        body()
    }
}

pub struct Done<P, O> {
    pub payload: P,
    pub result: CoreResult<O>,
    pub timing: Timing,
}

struct State<P> {
    queue: Queue<P>,
    /// An idle instance is watching the queue.
    leader: bool,
    /// The leader has been signalled and has not woken yet: further arrivals need not signal
    /// again (saves a futex wake per request under load).
    leader_signalled: bool,
    /// No new requests; instances exit once the queue is empty.
    closing: bool,
    /// Deadline the timer thread is waiting for, if any.
    timer_deadline: Option<Instant>,
    /// Threads (instances and timer) that have not exited yet.
    live: usize,
    stats: Stats,
}

struct Shared<E: Executor> {
    cfg: Config,
    exec: E,
    /// Invariant: every field of `State` is read and written with this mutex held.
    state: Mutex<State<E::Payload>>,
    /// Wakes the leader: a request arrived or the batcher is closing.
    leader_cv: Condvar,
    /// Wakes a follower: leadership is free.
    follower_cv: Condvar,
    /// Wakes the timer: an earlier deadline was queued or the batcher is closing.
    timer_cv: Condvar,
    /// Signals a thread exit to `close`.
    exit_cv: Condvar,
    next_id: AtomicU64,
}

pub struct Batcher<E: Executor> {
    shared: Arc<Shared<E>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Ask the kernel to fire this thread's timed waits on time: Linux may delay a timed wake-up
/// by the thread's timer slack, 50 us by default, which is 5% of a 1 ms queue delay.
fn precise_timers() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one integer (nanoseconds) and only affects this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

fn elapsed_ns(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_nanos() as u64
}

impl<E: Executor> Shared<E> {
    fn lock(&self) -> MutexGuard<'_, State<E::Payload>> {
        // A panic never happens while the lock is held (executor calls run unlocked), so a
        // poisoned lock still guards consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail_all(&self, entries: Vec<Entry<E::Payload>>, err: impl Fn() -> CoreError) {
        if entries.is_empty() {
            return;
        }
        let now = Instant::now();
        let done = entries
            .into_iter()
            .map(|e| Done {
                timing: Timing {
                    queue_ns: elapsed_ns(e.enqueued, now),
                    ..Timing::default()
                },
                payload: e.payload,
                result: Err(err()),
            })
            .collect();
        self.exec.complete(done);
    }

    /// Apply the queue timeouts due at `now` (the lock is released while REJECT requests are
    /// failed); returns whether any was rejected (the queue may have changed meanwhile) and the
    /// lock again.
    fn expire<'a>(
        &'a self,
        mut st: MutexGuard<'a, State<E::Payload>>,
        now: Instant,
    ) -> (bool, MutexGuard<'a, State<E::Payload>>) {
        let expired = st.queue.expire(now);
        st.stats.delayed += expired.delayed as u64;
        if expired.rejected.is_empty() {
            return (false, st);
        }
        st.stats.timeout += expired.rejected.len() as u64;
        drop(st);
        self.fail_all(expired.rejected, || CoreError::Timeout(TIMEOUT.into()));
        (true, self.lock())
    }

    fn thread_exit(&self, mut st: MutexGuard<'_, State<E::Payload>>) {
        st.live -= 1;
        drop(st);
        self.exit_cv.notify_all();
    }

    /// Body of one instance thread.
    fn instance(&self) {
        let mut st = self.lock();
        loop {
            while st.leader && !(st.closing && st.queue.is_empty()) {
                st = self.follower_cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.closing && st.queue.is_empty() {
                self.follower_cv.notify_all();
                self.timer_cv.notify_one();
                return self.thread_exit(st);
            }
            st.leader = true;
            let batch = loop {
                st.leader_signalled = false;
                let now = Instant::now();
                let (rejected, next) = self.expire(st, now);
                st = next;
                if rejected {
                    continue;
                }
                match st.queue.decide(&self.cfg, now, st.closing) {
                    Decision::Send(n) => break st.queue.take(n),
                    Decision::WaitUntil(at) => {
                        let wait = at.saturating_duration_since(now);
                        st = self
                            .leader_cv
                            .wait_timeout(st, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    Decision::Idle if st.closing => break Vec::new(),
                    Decision::Idle => {
                        st = self.leader_cv.wait(st).unwrap_or_else(|p| p.into_inner());
                    }
                }
            };
            st.leader = false;
            self.follower_cv.notify_one();
            if batch.is_empty() {
                continue;
            }
            drop(st);
            self.execute(batch);
            st = self.lock();
        }
    }

    fn execute(&self, batch: Vec<Entry<E::Payload>>) {
        let start = Instant::now();
        let mut queue_ns = Vec::with_capacity(batch.len());
        let mut payloads = Vec::with_capacity(batch.len());
        for e in batch {
            queue_ns.push(elapsed_ns(e.enqueued, start));
            payloads.push(e.payload);
        }
        let rows: usize = payloads.iter().map(Payload::rows).sum();
        let result = match catch_unwind(AssertUnwindSafe(|| self.exec.run(&payloads))) {
            Ok(Ok(outs)) if outs.len() == payloads.len() => Ok(outs),
            Ok(Ok(outs)) => Err(CoreError::Inference(format!(
                "the executor returned {} results for {} requests",
                outs.len(),
                payloads.len()
            ))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CoreError::Inference("the executor panicked".into())),
        };
        let compute_ns = elapsed_ns(start, Instant::now());
        self.lock().stats.record_batch(
            rows,
            payloads.len(),
            queue_ns.iter().sum(),
            compute_ns,
            result.is_ok(),
        );
        let timing = |q: u64| Timing {
            queue_ns: q,
            compute_ns,
            batch_size: rows,
        };
        let done = match result {
            Ok(outs) => payloads
                .into_iter()
                .zip(outs)
                .zip(queue_ns)
                .map(|((payload, out), q)| Done {
                    payload,
                    result: Ok(out),
                    timing: timing(q),
                })
                .collect(),
            Err(err) => {
                let msg = err.to_string();
                payloads
                    .into_iter()
                    .zip(queue_ns)
                    .map(|(payload, q)| Done {
                        payload,
                        result: Err(CoreError::Inference(msg.clone())),
                        timing: timing(q),
                    })
                    .collect()
            }
        };
        self.exec.complete(done);
    }

    /// Body of the timer thread: apply queue timeouts when their deadline passes (fail REJECT
    /// requests, move DELAY ones behind their level), even while every instance is busy.
    fn timer(&self) {
        let mut st = self.lock();
        loop {
            if st.closing && st.queue.is_empty() {
                return self.thread_exit(st);
            }
            let now = Instant::now();
            let (rejected, next) = self.expire(st, now);
            st = next;
            if rejected {
                continue;
            }
            st.timer_deadline = st.queue.next_deadline();
            st = match st.timer_deadline {
                Some(at) => {
                    let wait = at.saturating_duration_since(now);
                    self.timer_cv
                        .wait_timeout(st, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.timer_cv.wait(st).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

impl<E: Executor> Batcher<E> {
    /// Validate the configuration and start `instances` instance threads and the timer thread.
    pub fn start(cfg: Config, exec: E) -> CoreResult<Self> {
        cfg.validate()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Queue::new(&cfg),
                leader: false,
                leader_signalled: false,
                closing: false,
                timer_deadline: None,
                live: cfg.instances + 1,
                stats: Stats::default(),
            }),
            cfg,
            exec,
            leader_cv: Condvar::new(),
            follower_cv: Condvar::new(),
            timer_cv: Condvar::new(),
            exit_cv: Condvar::new(),
            next_id: AtomicU64::new(1),
        });
        let spawn = |name: String, body: fn(&Shared<E>)| {
            let s = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    precise_timers();
                    body(&s)
                })
                .map_err(|e| CoreError::Unavailable(format!("cannot start a batcher thread: {e}")))
        };
        let mut threads = Vec::new();
        let mut started = || -> CoreResult<()> {
            for i in 0..shared.cfg.instances {
                threads.push(spawn(format!("servekit-batch-{i}"), |s| {
                    s.exec.instance_thread(&mut || s.instance())
                })?);
            }
            threads.push(spawn("servekit-batch-timer".into(), Shared::timer)?);
            Ok(())
        };
        let outcome = started();
        let batcher = Batcher {
            shared: Arc::clone(&shared),
            threads: Mutex::new(threads),
        };
        if let Err(e) = outcome {
            batcher.close(false, Some(Duration::ZERO));
            return Err(e);
        }
        Ok(batcher)
    }

    pub fn config(&self) -> &Config {
        &self.shared.cfg
    }

    pub fn executor(&self) -> &E {
        &self.shared.exec
    }

    /// Queue a request. `priority` 0 means the default level; `timeout` is the request's own
    /// queue timeout (`None` or zero: none asked), applied under its level's policy
    /// ([`super::QueuePolicy::timeout`]). Returns the request id (for [`Batcher::cancel`]). Fails with
    /// InvalidArgument (rows, priority), Unavailable (closed) or QueueFull (its level holds its
    /// policy's `max_queue_size`); the payload is dropped on failure.
    pub fn submit(
        &self,
        payload: E::Payload,
        priority: u32,
        timeout: Option<Duration>,
    ) -> CoreResult<u64> {
        let s = &self.shared;
        let rows = payload.rows();
        if rows == 0 || rows > s.cfg.max_batch_size {
            return Err(CoreError::invalid(format!(
                "request has {rows} rows; each request needs between 1 and max_batch_size ({}) rows",
                s.cfg.max_batch_size
            )));
        }
        let level = s.cfg.level(priority)?;
        let policy = s.cfg.policy(level);
        let now = Instant::now();
        let deadline = policy.timeout(timeout).map(|t| now + t);
        let id = s.next_id.fetch_add(1, Ordering::Relaxed);
        let mut st = s.lock();
        if st.closing {
            return Err(CoreError::Unavailable("the batcher is closed".into()));
        }
        if st.queue.is_full(level) {
            st.stats.queue_full += 1;
            return Err(CoreError::QueueFull(format!(
                "{QUEUE_FULL} ({} requests queued)",
                policy.max_queue_size
            )));
        }
        st.queue.push(
            level,
            Entry {
                id,
                payload,
                enqueued: now,
                deadline,
            },
        );
        if st.leader && !st.leader_signalled {
            st.leader_signalled = true;
            s.leader_cv.notify_one();
        }
        if let Some(d) = deadline {
            if st.timer_deadline.is_none_or(|t| d < t) {
                st.timer_deadline = Some(d);
                s.timer_cv.notify_one();
            }
        }
        Ok(id)
    }

    /// Remove a request that has not started; returns its payload, or `None` when it already
    /// started or finished.
    pub fn cancel(&self, id: u64) -> Option<E::Payload> {
        let s = &self.shared;
        let mut st = s.lock();
        let entry = st.queue.remove(id)?;
        st.stats.cancelled += 1;
        if st.closing && st.queue.is_empty() {
            s.leader_cv.notify_all();
            s.timer_cv.notify_one();
        }
        Some(entry.payload)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let st = self.shared.lock();
        let mut stats = st.stats.clone();
        stats.queued = st.queue.len() as u64;
        stats
    }

    /// Stop taking requests. With `drain`, queued requests still run (batches leave without
    /// waiting for their delay); without it they fail with Unavailable. Waits up to `timeout`
    /// (`None`: no limit) for the threads to finish; if they have not, the requests still
    /// queued fail and the threads are left to finish their current batch on their own.
    /// Returns whether every thread finished. Calling it again is harmless.
    pub fn close(&self, drain: bool, timeout: Option<Duration>) -> bool {
        let s = &self.shared;
        let closed = || CoreError::Unavailable("the batcher closed before the request ran".into());
        let mut st = s.lock();
        st.closing = true;
        if !drain {
            let dropped = st.queue.drain_all();
            st.stats.fail += dropped.len() as u64;
            drop(st);
            s.fail_all(dropped, closed);
            st = s.lock();
        }
        s.leader_cv.notify_all();
        s.follower_cv.notify_all();
        s.timer_cv.notify_all();
        let deadline = timeout.map(|t| Instant::now() + t);
        while st.live > 0 {
            st = match deadline {
                None => s.exit_cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    s.exit_cv
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        let finished = st.live == 0;
        if !finished {
            let dropped = st.queue.drain_all();
            st.stats.fail += dropped.len() as u64;
            drop(st);
            s.fail_all(dropped, closed);
        } else {
            drop(st);
            let handles =
                std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
            for h in handles {
                // Threads have already returned; a panic there was caught per batch.
                let _ = h.join();
            }
        }
        finished
    }
}

impl<E: Executor> Drop for Batcher<E> {
    /// Dropping an open batcher fails what is queued and lets the threads exit on their own.
    fn drop(&mut self) {
        self.close(false, Some(Duration::ZERO));
    }
}
