//! Stopping every worker: a shared flag, and the first failure, which is what the run reports.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Control {
    stop: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl Control {
    pub fn new() -> Control {
        Control::default()
    }

    /// Ask every worker to stop at its next check.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Record a worker's failure (the first one wins) and stop everything.
    pub fn fail(&self, message: impl Into<String>) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_none() {
            *failure = Some(message.into());
        }
        drop(failure);
        self.stop();
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A panic's message, for one-line errors.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic without a message".to_string()
    }
}
