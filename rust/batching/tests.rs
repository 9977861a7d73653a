//! Threaded tests of the scheduler with an executor that records the batches it receives.

use super::*;
use crate::error::{CoreError, CoreResult};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `(tag, rows, shape key)`; the output is the tag.
struct Req(u32, usize, u32);

impl Payload for Req {
    fn rows(&self) -> usize {
        self.1
    }
    fn batches_with(&self, other: &Self) -> bool {
        self.2 == other.2
    }
}

/// Records each batch as its list of tags; fails batches containing tag 666; can be held
/// shut by a gate so requests pile up while "the model runs".
struct Recorder {
    batches: Mutex<Vec<Vec<u32>>>,
    gate: Mutex<Option<Receiver<()>>>,
    done: Mutex<Sender<(u32, CoreResult<u32>, Timing)>>,
}

impl Executor for Recorder {
    type Payload = Req;
    type Output = u32;
    fn run(&self, batch: &[Req]) -> CoreResult<Vec<u32>> {
        if let Some(gate) = self.gate.lock().unwrap().as_ref() {
            let _ = gate.recv_timeout(Duration::from_secs(5));
        }
        let tags: Vec<u32> = batch.iter().map(|r| r.0).collect();
        self.batches.lock().unwrap().push(tags.clone());
        if tags.contains(&666) {
            return Err(CoreError::Inference("model exploded".into()));
        }
        Ok(tags)
    }
    fn complete(&self, done: Vec<Done<Req, u32>>) {
        let tx = self.done.lock().unwrap();
        for d in done {
            let _ = tx.send((d.payload.0, d.result, d.timing));
        }
    }
}

type Results = Receiver<(u32, CoreResult<u32>, Timing)>;

fn start(cfg: Config, gated: bool) -> (Batcher<Recorder>, Results, Option<Sender<()>>) {
    let (tx, rx) = channel();
    let (gate_tx, gate_rx) = channel();
    let rec = Recorder {
        batches: Mutex::new(Vec::new()),
        gate: Mutex::new(gated.then_some(gate_rx)),
        done: Mutex::new(tx),
    };
    (
        Batcher::start(cfg, rec).unwrap(),
        rx,
        gated.then_some(gate_tx),
    )
}

fn recv(rx: &Results) -> (u32, CoreResult<u32>, Timing) {
    rx.recv_timeout(Duration::from_secs(5))
        .expect("a result within 5 s")
}

fn batches(b: &Batcher<Recorder>) -> Vec<Vec<u32>> {
    b.executor().batches.lock().unwrap().clone()
}

#[test]
fn requests_queued_while_the_model_runs_form_one_batch() {
    let (b, rx, gate) = start(Config::new(8), true);
    let gate = gate.unwrap();
    b.submit(Req(1, 1, 0), 0, None).unwrap();
    // Wait until the first batch is inside the runner, then queue three more.
    while b.stats().queued > 0 {
        std::thread::yield_now();
    }
    for t in 2..=4 {
        b.submit(Req(t, 1, 0), 0, None).unwrap();
    }
    gate.send(()).unwrap();
    gate.send(()).unwrap();
    for _ in 0..4 {
        assert!(recv(&rx).1.is_ok());
    }
    assert_eq!(batches(&b), vec![vec![1], vec![2, 3, 4]]);
    let s = b.stats();
    assert_eq!((s.success, s.execution_count, s.inference_count), (4, 2, 4));
    assert_eq!(s.batch_sizes[&3].count, 1);
    assert!(b.close(true, Some(Duration::from_secs(5))));
}

#[test]
fn delay_holds_a_lone_request_until_it_runs_out() {
    let mut cfg = Config::new(8);
    cfg.max_queue_delay = Duration::from_millis(30);
    let (b, rx, _) = start(cfg, false);
    let t0 = Instant::now();
    b.submit(Req(1, 1, 0), 0, None).unwrap();
    b.submit(Req(2, 1, 0), 0, None).unwrap();
    let (_, _, timing) = recv(&rx);
    assert!(t0.elapsed() >= Duration::from_millis(30));
    assert!(timing.queue_ns >= 30_000_000);
    assert_eq!(timing.batch_size, 2);
    assert_eq!(batches(&b), vec![vec![1, 2]]);
}

#[test]
fn failing_batch_fails_only_its_requests() {
    let (b, rx, gate) = start(Config::new(2), true);
    let gate = gate.unwrap();
    b.submit(Req(1, 1, 0), 0, None).unwrap();
    while b.stats().queued > 0 {
        std::thread::yield_now();
    }
    for t in [666, 3] {
        b.submit(Req(t, 1, 0), 0, None).unwrap();
    }
    // First batch is [1] (taken at once), then [666, 3] fails, then the batcher keeps serving.
    gate.send(()).unwrap();
    gate.send(()).unwrap();
    let mut got: Vec<(u32, bool)> = (0..3)
        .map(|_| recv(&rx))
        .map(|(t, r, _)| (t, r.is_ok()))
        .collect();
    got.sort();
    assert_eq!(got, vec![(1, true), (3, false), (666, false)]);
    b.submit(Req(4, 1, 0), 0, None).unwrap();
    gate.send(()).unwrap();
    let (t, r, _) = recv(&rx);
    assert_eq!((t, r.unwrap()), (4, 4));
    assert_eq!(b.stats().fail, 2);
}

#[test]
fn queue_full_and_oversized_requests_are_refused() {
    let mut cfg = Config::new(4);
    cfg.default_policy.max_queue_size = 1;
    cfg.max_queue_delay = Duration::from_secs(10);
    let (b, _rx, _) = start(cfg, false);
    assert!(matches!(
        b.submit(Req(1, 5, 0), 0, None),
        Err(CoreError::InvalidArgument(_))
    ));
    b.submit(Req(1, 1, 0), 0, None).unwrap();
    let err = b.submit(Req(2, 1, 0), 0, None).unwrap_err();
    assert!(matches!(err, CoreError::QueueFull(_)));
    assert!(err.to_string().contains(QUEUE_FULL));
    assert_eq!(b.stats().queue_full, 1);
    assert!(matches!(
        b.submit(Req(1, 1, 0), 9, None),
        Err(CoreError::InvalidArgument(_))
    ));
}

#[test]
fn expired_requests_fail_on_time_even_while_instances_are_busy() {
    let (b, rx, gate) = start(Config::new(1), true);
    let gate = gate.unwrap();
    b.submit(Req(1, 1, 0), 0, None).unwrap();
    b.submit(Req(2, 1, 0), 0, Some(Duration::from_millis(20)))
        .unwrap();
    let (t, r, _) = recv(&rx);
    assert_eq!(t, 2);
    let err = r.unwrap_err();
    assert!(matches!(err, CoreError::Timeout(_)) && err.to_string().contains(TIMEOUT));
    gate.send(()).unwrap();
    assert_eq!(recv(&rx).0, 1);
    assert_eq!(b.stats().timeout, 1);
}

#[test]
fn cancel_removes_only_queued_requests() {
    let mut cfg = Config::new(4);
    cfg.max_queue_delay = Duration::from_secs(10);
    let (b, _rx, _) = start(cfg, false);
    let id = b.submit(Req(1, 1, 0), 0, None).unwrap();
    assert_eq!(b.cancel(id).map(|r| r.0), Some(1));
    assert!(b.cancel(id).is_none());
    assert_eq!((b.stats().cancelled, b.stats().queued), (1, 0));
}

#[test]
fn priority_one_runs_first() {
    let mut cfg = Config::new(2);
    cfg.priority_levels = 2;
    let (b, rx, gate) = start(cfg, true);
    let gate = gate.unwrap();
    b.submit(Req(0, 2, 0), 0, None).unwrap();
    while b.stats().queued > 0 {
        std::thread::yield_now();
    }
    for (t, p) in [(1, 2), (2, 0), (3, 1), (4, 1)] {
        b.submit(Req(t, 1, 0), p, None).unwrap();
    }
    for _ in 0..3 {
        gate.send(()).unwrap();
    }
    for _ in 0..5 {
        assert!(recv(&rx).1.is_ok());
    }
    assert_eq!(batches(&b), vec![vec![0], vec![3, 4], vec![1, 2]]);
}

#[test]
fn close_drains_or_fails_and_returns() {
    let mut cfg = Config::new(4);
    cfg.max_queue_delay = Duration::from_secs(10);
    let (b, rx, _) = start(cfg.clone(), false);
    b.submit(Req(1, 1, 0), 0, None).unwrap();
    assert!(
        b.close(true, Some(Duration::from_secs(5))),
        "drain sends without waiting the delay"
    );
    assert!(recv(&rx).1.is_ok());
    assert!(matches!(
        b.submit(Req(2, 1, 0), 0, None),
        Err(CoreError::Unavailable(_))
    ));

    let (b, rx, _) = start(cfg, false);
    b.submit(Req(1, 1, 0), 0, None).unwrap();
    assert!(b.close(false, Some(Duration::from_secs(5))));
    assert!(matches!(recv(&rx).1, Err(CoreError::Unavailable(_))));
}

#[test]
fn close_with_a_stuck_batch_gives_up_after_its_timeout() {
    let (b, rx, gate) = start(Config::new(1), true);
    b.submit(Req(1, 1, 0), 0, None).unwrap();
    while b.stats().queued > 0 {
        std::thread::yield_now();
    }
    b.submit(Req(2, 1, 0), 0, None).unwrap();
    assert!(!b.close(true, Some(Duration::from_millis(20))));
    assert!(matches!(recv(&rx), (2, Err(CoreError::Unavailable(_)), _)));
    drop(gate);
    assert!(recv(&rx).1.is_ok(), "the running batch still finishes");
}

#[test]
fn many_threads_get_their_own_results() {
    let mut cfg = Config::new(16);
    cfg.instances = 2;
    let (b, rx, _) = start(cfg, false);
    let b = Arc::new(b);
    let handles: Vec<_> = (0..8u32)
        .map(|t| {
            let b = Arc::clone(&b);
            std::thread::spawn(move || {
                for i in 0..250u32 {
                    b.submit(Req(t * 1000 + i, 1, 0), 0, None).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut seen = 0;
    for _ in 0..2000 {
        let (tag, r, _) = recv(&rx);
        assert_eq!(r.unwrap(), tag);
        seen += 1;
    }
    assert_eq!(seen, 2000);
    assert_eq!(b.stats().inference_count, 2000);
}

/// Wait (bounded) until `cond` holds on the batcher's stats.
fn wait_for(b: &Batcher<Recorder>, what: &str, cond: impl Fn(&Stats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond(&b.stats()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

fn delay_policy() -> QueuePolicy {
    QueuePolicy {
        timeout_action: TimeoutAction::Delay,
        ..QueuePolicy::default()
    }
}

#[test]
fn a_timed_out_delay_request_still_runs_after_the_others() {
    let mut cfg = Config::new(1);
    cfg.default_policy = delay_policy();
    let (b, rx, gate) = start(cfg, true);
    let gate = gate.unwrap();
    b.submit(Req(1, 1, 0), 0, None).unwrap();
    wait_for(&b, "the first batch to start", |s| s.queued == 0);
    b.submit(Req(2, 1, 0), 0, Some(Duration::from_millis(1)))
        .unwrap();
    wait_for(&b, "request 2 to time out", |s| s.delayed == 1);
    b.submit(Req(3, 1, 0), 0, None).unwrap();
    for _ in 0..3 {
        gate.send(()).unwrap();
    }
    let order: Vec<(u32, u32)> = (0..3)
        .map(|_| recv(&rx))
        .map(|(t, r, _)| (t, r.unwrap()))
        .collect();
    assert_eq!(order, vec![(1, 1), (3, 3), (2, 2)]);
    assert_eq!(batches(&b), vec![vec![1], vec![3], vec![2]]);
    let s = b.stats();
    assert_eq!((s.timeout, s.delayed, s.success), (0, 1, 3));
}

#[test]
fn a_delayed_request_of_a_higher_level_runs_before_lower_levels() {
    let mut cfg = Config::new(1);
    cfg.priority_levels = 2;
    cfg.level_policies.insert(1, delay_policy());
    let (b, rx, gate) = start(cfg, true);
    let gate = gate.unwrap();
    b.submit(Req(1, 1, 0), 0, None).unwrap();
    wait_for(&b, "the first batch to start", |s| s.queued == 0);
    b.submit(Req(2, 1, 0), 2, None).unwrap();
    b.submit(Req(3, 1, 0), 1, Some(Duration::from_millis(1)))
        .unwrap();
    wait_for(&b, "request 3 to time out", |s| s.delayed == 1);
    for _ in 0..3 {
        gate.send(()).unwrap();
    }
    for _ in 0..3 {
        assert!(recv(&rx).1.is_ok());
    }
    assert_eq!(batches(&b), vec![vec![1], vec![3], vec![2]]);
}

#[test]
fn each_level_is_bounded_by_its_own_max_queue_size() {
    let mut cfg = Config::new(1);
    cfg.priority_levels = 2;
    cfg.default_policy.max_queue_size = 2;
    cfg.level_policies.insert(
        1,
        QueuePolicy {
            max_queue_size: 1,
            ..QueuePolicy::default()
        },
    );
    let (b, rx, gate) = start(cfg, true);
    let gate = gate.unwrap();
    b.submit(Req(1, 1, 0), 2, None).unwrap();
    wait_for(&b, "the first batch to start", |s| s.queued == 0);
    b.submit(Req(2, 1, 0), 1, None).unwrap();
    let full = b.submit(Req(3, 1, 0), 1, None).unwrap_err();
    assert!(matches!(full, CoreError::QueueFull(_)));
    assert!(full.to_string().contains("(1 requests queued)"), "{full}");
    // Level 2 still takes requests up to its own bound.
    b.submit(Req(4, 1, 0), 0, None).unwrap();
    b.submit(Req(5, 1, 0), 2, None).unwrap();
    let full = b.submit(Req(6, 1, 0), 2, None).unwrap_err();
    assert!(full.to_string().contains("(2 requests queued)"), "{full}");
    for _ in 0..4 {
        gate.send(()).unwrap();
    }
    let done: Vec<u32> = (0..4).map(|_| recv(&rx)).map(|(t, _, _)| t).collect();
    assert_eq!(done, vec![1, 2, 4, 5]);
    let s = b.stats();
    assert_eq!((s.queue_full, s.success), (2, 4));
}

#[test]
fn each_level_has_its_own_default_timeout() {
    let mut cfg = Config::new(1);
    cfg.priority_levels = 2;
    cfg.level_policies.insert(
        1,
        QueuePolicy {
            default_timeout: Some(Duration::from_millis(1)),
            ..QueuePolicy::default()
        },
    );
    let (b, rx, gate) = start(cfg, true);
    let gate = gate.unwrap();
    b.submit(Req(1, 1, 0), 2, None).unwrap();
    wait_for(&b, "the first batch to start", |s| s.queued == 0);
    b.submit(Req(2, 1, 0), 1, None).unwrap();
    b.submit(Req(3, 1, 0), 2, None).unwrap();
    let (t, r, _) = recv(&rx);
    assert_eq!(t, 2);
    assert!(matches!(r, Err(CoreError::Timeout(_))));
    gate.send(()).unwrap();
    gate.send(()).unwrap();
    assert_eq!(recv(&rx).0, 1);
    let (t, r, _) = recv(&rx);
    assert_eq!((t, r.unwrap()), (3, 3), "level 2 has no timeout");
    assert_eq!(b.stats().timeout, 1);
}

#[test]
fn a_request_may_only_shorten_a_default_timeout_it_is_allowed_to_override() {
    let mut cfg = Config::new(1);
    cfg.priority_levels = 2;
    cfg.default_policy.default_timeout = Some(Duration::from_secs(60));
    cfg.level_policies.insert(
        1,
        QueuePolicy {
            default_timeout: Some(Duration::from_secs(60)),
            allow_timeout_override: true,
            ..QueuePolicy::default()
        },
    );
    let (b, rx, gate) = start(cfg, true);
    let gate = gate.unwrap();
    b.submit(Req(1, 1, 0), 2, None).unwrap();
    wait_for(&b, "the first batch to start", |s| s.queued == 0);
    // Level 2 ignores the request's 1 ms; level 1 allows it and rejects the request.
    b.submit(Req(2, 1, 0), 2, Some(Duration::from_millis(1)))
        .unwrap();
    b.submit(Req(3, 1, 0), 1, Some(Duration::from_millis(1)))
        .unwrap();
    let (t, r, _) = recv(&rx);
    assert_eq!(t, 3);
    assert!(matches!(r, Err(CoreError::Timeout(_))));
    gate.send(()).unwrap();
    gate.send(()).unwrap();
    assert_eq!(recv(&rx).0, 1);
    let (t, r, _) = recv(&rx);
    assert_eq!((t, r.unwrap()), (2, 2));
}
