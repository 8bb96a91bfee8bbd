//! A connection's blocking callbacks, one after another on tokio's blocking pool: what
//! [`ServerOptions::blocking_callbacks`](crate::ServerOptions::blocking_callbacks) does on a
//! current-thread runtime (thread-per-core mode), where `block_in_place` is refused.
//!
//! The driver hands each callback over and goes on writing; it reads nothing more from the
//! socket until the callbacks handed over have run (the connection's own backpressure, as with
//! `block_in_place`), so the queue holds at most what one read brought.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

/// A callback handed over.
type Job = Box<dyn FnOnce() + Send>;

/// One connection's queue of callbacks, run in order by at most one blocking-pool thread at a
/// time.
#[derive(Default)]
pub(super) struct Serial {
    state: Mutex<State>,
    /// The driver, waiting for the queue to drain before it reads again.
    driver: AtomicWaker,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// A blocking-pool thread is running the queue.
    running: bool,
}

impl Serial {
    /// Runs `job` after the callbacks handed over before it. Must be called within a tokio
    /// runtime; if the runtime is shutting down, the job is dropped without running.
    pub(super) fn run(self: &Arc<Self>, job: impl FnOnce() + Send + 'static) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.jobs.push_back(Box::new(job));
        if !state.running {
            state.running = true;
            drop(state);
            let serial = self.clone();
            tokio::task::spawn_blocking(move || serial.drain());
        }
    }

    /// Ready once every callback handed over has run; until then the driver's waker is kept
    /// and woken when the queue is empty.
    pub(super) fn poll_idle(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before looking, so that a drain finishing after the look wakes us.
        self.driver.register(cx.waker());
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.running {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    fn drain(&self) {
        loop {
            let job = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                match state.jobs.pop_front() {
                    Some(job) => job,
                    None => {
                        state.running = false;
                        break;
                    }
                }
            };
            // Each job guards its callback: a panic is reported, not propagated.
            job();
        }
        self.driver.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Jobs run in the order they were handed over, off the runtime's thread, and the driver
    /// is told when they are all done.
    #[tokio::test(flavor = "current_thread")]
    async fn runs_in_order_off_the_thread_and_wakes_when_drained() {
        let serial = Arc::new(Serial::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(std::sync::Barrier::new(2));
        let here = std::thread::current().id();
        let off_thread = Arc::new(AtomicBool::new(true));
        for i in 0..5 {
            let (order, gate, off_thread) = (order.clone(), gate.clone(), off_thread.clone());
            serial.run(move || {
                if i == 0 {
                    // Held until the test has seen the queue busy.
                    gate.wait();
                }
                if std::thread::current().id() == here {
                    off_thread.store(false, Ordering::SeqCst);
                }
                order.lock().unwrap().push(i);
            });
        }
        let busy = std::future::poll_fn(|cx| Poll::Ready(serial.poll_idle(cx))).await;
        assert!(busy.is_pending(), "idle while a job is held");
        gate.wait();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            std::future::poll_fn(|cx| serial.poll_idle(cx)),
        )
        .await
        .expect("the queue drains");
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        assert!(
            off_thread.load(Ordering::SeqCst),
            "a job ran on the runtime's thread"
        );
    }
}
