use super::*;

fn frame(len: usize) -> Outgoing {
    let payload = Bytes::from(vec![0; len]);
    Outgoing::Frame(OutFrame::new(Role::Server, OpCode::Binary, payload, || {
        [0; 4]
    }))
}

/// A pool of the test's own, so that tests running side by side do not share a total.
fn pool(cap: usize) -> &'static Pool {
    Box::leak(Box::new(Pool::new(cap)))
}

fn connection(budget: usize, policy: BackpressurePolicy, pool: &'static Pool) -> Shared {
    Shared::with_pool(Role::Server, Status::Connected, budget, policy, pool)
}

#[test]
fn the_budget_counts_until_written() {
    let pool = pool(usize::MAX);
    let budget = cost(60) + cost(40);
    let shared = connection(budget, BackpressurePolicy::Reject, pool);
    shared.send(frame(60)).unwrap();
    assert_eq!(
        shared.send(frame(41)),
        Err(SendError::BufferFull {
            buffered: cost(60),
            budget
        })
    );
    let mut out = VecDeque::new();
    assert_eq!(shared.take(&mut out), None);
    assert_eq!(out.len(), 1);
    // Taken by the driver but not written: still counted.
    assert!(shared.send(frame(41)).is_err());
    assert_eq!(pool.total(), cost(60), "the process counts it too");
    shared.send(frame(40)).unwrap();
    shared.release(cost(60) + cost(40));
    out.clear();
    assert_eq!(pool.total(), cost(40), "what the outbox still holds");
    assert_eq!(
        shared.status(),
        Status::Connected,
        "Reject keeps the connection"
    );
}

/// The budget bounds what piles up; one message larger than the budget still goes on an
/// empty queue (max_message_size and the application bound a single message).
#[test]
fn one_message_always_goes_on_an_empty_queue() {
    let shared = connection(100, BackpressurePolicy::Reject, pool(usize::MAX));
    shared.send(frame(1000)).unwrap();
    assert!(shared.send(frame(1)).is_err());
    shared.release(cost(1000));
    shared.send(frame(1)).unwrap();
}

#[test]
fn the_close_policy_fails_the_connection() {
    let shared = connection(cost(10), BackpressurePolicy::Close, pool(usize::MAX));
    shared.send(frame(10)).unwrap();
    assert!(shared.send(frame(1)).is_err());
    assert_eq!(shared.status(), Status::Closing);
    let mut out = VecDeque::new();
    assert!(matches!(
        shared.take(&mut out),
        Some(Command::Fail {
            code: CloseCode::POLICY_VIOLATION,
            discard_queued: true,
            ..
        })
    ));
    assert_eq!(
        shared.send(frame(1)),
        Err(SendError::NotConnected(Status::Closing))
    );
}

/// At the process-wide cap, the connections that hold more than their share are refused
/// (and, by their policy, closed); those that keep up go on.
#[test]
fn at_the_process_cap_the_connections_over_their_share_are_cut() {
    let pool = pool(10 * cost(1000));
    let stalled = connection(usize::MAX, BackpressurePolicy::Close, pool);
    let keeping_up = connection(usize::MAX, BackpressurePolicy::Close, pool);
    keeping_up.send(frame(1000)).unwrap();
    // The stalled reader piles up to the cap, and past it while it holds no more than its
    // share... which it does not, with two busy connections.
    let mut sent = 0;
    while stalled.send(frame(1000)).is_ok() {
        sent += 1;
    }
    assert_eq!(sent, 9, "the cap: 10 messages in the process");
    assert_eq!(stalled.status(), Status::Closing, "cut by its policy");
    // The one that keeps up is under its share: it goes on, even past the cap.
    assert!(pool.total() >= pool.cap());
    keeping_up.send(frame(1000)).unwrap();
    assert_eq!(keeping_up.status(), Status::Connected);
    // The stalled connection's queue is freed with it: the process is under its cap again.
    stalled.finish();
    assert!(
        pool.total() < pool.cap(),
        "{} of {}",
        pool.total(),
        pool.cap()
    );
    assert_eq!(pool.busy(), 1);
}

/// Over the cap, a connection with nothing queued still takes a message larger than its
/// share: it keeps up, it is not the one to cut.
#[test]
fn over_the_cap_an_empty_queue_still_takes_one_message() {
    let pool = pool(4 * cost(1000));
    let stalled = connection(usize::MAX, BackpressurePolicy::Close, pool);
    for _ in 0..3 {
        stalled.send(frame(1000)).unwrap();
    }
    let idle = connection(usize::MAX, BackpressurePolicy::Close, pool);
    idle.send(frame(3000)).unwrap();
    assert!(pool.total() > pool.cap());
    assert_eq!(idle.status(), Status::Connected);
    // With something queued, it is judged by its share like the others.
    assert!(idle.send(frame(3000)).is_err());
}

/// A connection whose driver never ran leaves the count of busy queues as it found it.
#[test]
fn a_connection_dropped_with_its_queue_is_no_longer_busy() {
    let pool = pool(usize::MAX);
    let shared = connection(usize::MAX, BackpressurePolicy::Close, pool);
    shared.send(frame(10)).unwrap();
    assert_eq!(pool.busy(), 1);
    drop(shared);
    assert_eq!(pool.busy(), 0);
    assert_eq!(pool.total(), 0);
}

#[test]
fn a_refused_message_leaves_nothing_in_the_process_total() {
    let pool = pool(usize::MAX);
    let shared = connection(cost(10), BackpressurePolicy::Reject, pool);
    shared.send(frame(10)).unwrap();
    let before = pool.total();
    assert!(shared.send(frame(10)).is_err());
    assert_eq!(pool.total(), before);
    shared.finish();
    assert_eq!(pool.total(), 0, "finish frees the outbox");
}

#[test]
fn the_first_close_wins_but_abort_overrides() {
    let shared = Shared::new(
        Role::Server,
        Status::Connected,
        10,
        BackpressurePolicy::Close,
    );
    let close = Command::Close {
        code: CloseCode::NORMAL,
        reason: String::new(),
        timeout: None,
    };
    shared.command(close.clone());
    shared.command(Command::Fail {
        code: CloseCode::INTERNAL_ERROR,
        reason: String::new(),
        cause: "x".into(),
        discard_queued: false,
    });
    let mut out = VecDeque::new();
    assert_eq!(shared.take(&mut out), Some(close));
    shared.command(Command::Abort {
        cause: "now".into(),
    });
    assert!(matches!(shared.take(&mut out), Some(Command::Abort { .. })));
    shared.finish();
    shared.command(Command::Abort {
        cause: "again".into(),
    });
    assert_eq!(shared.take(&mut out), None);
}
