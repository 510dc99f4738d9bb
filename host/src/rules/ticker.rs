//! The epoch ticker behind every rule call's CPU deadline. It ticks (every
//! [`EPOCH_TICK`]) while rule calls are in flight (and [`LINGER`] after) and sleeps
//! otherwise, so an idle agent is not woken a thousand times a second; a call's
//! deadline still counts from its start, because the ticker is woken before the call.

use crate::rules::cpu_budget::EPOCH_TICK;
use anyhow::{Context, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::Thread;

/// How long the ticker keeps ticking after the last call ended: calls that follow
/// closely (batch after batch, a faulted batch redone event by event) find it running,
/// so their deadlines are as exact as with a ticker that never sleeps.
const LINGER: std::time::Duration = std::time::Duration::from_millis(100);

/// Shared by the engine, its instances and the ticker thread.
pub(crate) struct Ticker {
    in_flight: AtomicUsize,
    stop: AtomicBool,
    thread: Thread,
}

/// One rule call in flight; the ticker may sleep again once none is.
pub(crate) struct Flight(Arc<Ticker>);

impl Ticker {
    /// Starts the ticker thread for `engine` (held weakly: the thread ends with it).
    pub(crate) fn start(engine: &wasmtime::Engine) -> Result<Arc<Ticker>> {
        let engine = engine.weak();
        let (handoff, receive) = std::sync::mpsc::sync_channel::<Arc<Ticker>>(1);
        let handle = std::thread::Builder::new()
            .name("rulehost-epoch".into())
            .spawn(move || {
                let Ok(ticker) = receive.recv() else { return };
                drop(receive);
                let mut last_busy = std::time::Instant::now();
                while !ticker.stop.load(Ordering::Acquire) {
                    if ticker.in_flight.load(Ordering::Acquire) > 0 {
                        last_busy = std::time::Instant::now();
                    } else if last_busy.elapsed() >= LINGER {
                        // An unpark since the check makes this return at once.
                        std::thread::park();
                        last_busy = std::time::Instant::now();
                        continue;
                    }
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .context("starting the CPU deadline thread")?;
        let ticker = Arc::new(Ticker {
            in_flight: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            thread: handle.thread().clone(),
        });
        handoff
            .send(ticker.clone())
            .context("starting the CPU deadline thread")?;
        Ok(ticker)
    }

    /// Marks a rule call in flight until the returned guard drops; wakes the ticker
    /// when it was idle.
    pub(crate) fn flight(self: &Arc<Self>) -> Flight {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.thread.unpark();
        }
        Flight(self.clone())
    }

    /// Ends the thread (the engine is going away).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
