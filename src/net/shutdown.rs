//! Stopping the loop from another thread.
//!
//! A [`ShutdownHandle`] sets a flag and wakes the loop through its `mio::Waker`; the loop
//! checks the flag once per turn, so a wake-up that races with a busy turn is never lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::Waker;

/// What a [`ShutdownHandle`] shares with the loop.
pub(crate) struct Shared {
    stop: AtomicBool,
    waker: Waker,
}

/// Asks a running (or not yet running) [`super::Server`] to stop: every client is
/// disconnected with `Disconnect::Shutdown`, pending output is flushed best effort, and
/// `run` returns `Ok(())`. Cheap to clone; usable from any thread or a signal-watching
/// thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl Shared {
    pub(crate) fn new(waker: Waker) -> Shared {
        Shared {
            stop: AtomicBool::new(false),
            waker,
        }
    }

    /// Wakes the loop without asking it to stop (e.g. a store batch became durable).
    pub(crate) fn wake(&self) {
        // A failed wake-up only delays the release until the loop's next turn.
        let _ = self.waker.wake();
    }

    /// Sets the flag from inside the loop (no wake-up needed).
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

impl ShutdownHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> ShutdownHandle {
        ShutdownHandle { shared }
    }

    /// Requests the shutdown and returns at once; idempotent.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Err(e) = self.shared.waker.wake() {
            // The flag is set: the loop still stops at its next wake-up.
            log::warn!("cannot wake the event loop for shutdown: {e}");
        }
    }
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("requested", &self.shared.stop_requested())
            .finish()
    }
}
