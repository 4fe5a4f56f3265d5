//! How finished groups travel from samplers to the learner. Samplers and learner see only this
//! trait; the in-process queue below is one implementation, a broker-backed one another.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender};

use crate::trajectory::TrajectoryGroup;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    #[error("the transport is closed")]
    Closed,
    #[error("transport: {0}")]
    Failed(String),
}

/// Identifies a delivered group for [`Transport::ack`] (a broker's message id; unused in-process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryTag(pub String);

pub struct Delivery {
    pub group: TrajectoryGroup,
    pub tag: DeliveryTag,
    /// Sampled for an earlier run of this learner (before a crash and resume) and delivered
    /// again: its versions may be ahead of the resumed learner's, which then holds it until it
    /// gets there instead of refusing it.
    pub replay: bool,
}

pub trait Transport: Send + Sync {
    /// Hand a finished group to the learner. Blocks while the queue is full (back-pressure);
    /// fails once the transport is closed.
    fn send(&self, group: TrajectoryGroup) -> Result<(), TransportError>;
    /// The next group, waiting at most `timeout`.
    fn recv(&self, timeout: Duration) -> Result<Option<Delivery>, TransportError>;
    /// The learner has trained on these groups and checkpointed: a broker may forget them.
    fn ack(&self, _tags: &[DeliveryTag]) -> Result<(), TransportError> {
        Ok(())
    }
    /// Groups waiting in the queue now.
    fn queued(&self) -> usize;
    /// Wake blocked senders and receivers with [`TransportError::Closed`].
    fn close(&self);
}

/// A bounded crossbeam queue inside one process.
pub struct InProcess {
    tx: Sender<TrajectoryGroup>,
    rx: Receiver<TrajectoryGroup>,
    closed: AtomicBool,
}

/// How often a blocked call looks at the closed flag.
const POLL: Duration = Duration::from_millis(20);

impl InProcess {
    /// A queue holding at most `capacity` groups (at least 1).
    pub fn new(capacity: usize) -> InProcess {
        let (tx, rx) = bounded(capacity.max(1));
        InProcess { tx, rx, closed: AtomicBool::new(false) }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl Transport for InProcess {
    fn send(&self, mut group: TrajectoryGroup) -> Result<(), TransportError> {
        loop {
            if self.is_closed() {
                return Err(TransportError::Closed);
            }
            match self.tx.send_timeout(group, POLL) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(g)) => group = g,
                Err(SendTimeoutError::Disconnected(_)) => return Err(TransportError::Closed),
            }
        }
    }

    fn recv(&self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            // Groups already queued are still handed over after close.
            let wait = deadline.saturating_duration_since(std::time::Instant::now()).min(POLL);
            match self.rx.recv_timeout(wait) {
                Ok(group) => return Ok(Some(Delivery { group, tag: DeliveryTag(String::new()), replay: false })),
                Err(RecvTimeoutError::Timeout) => {
                    if self.is_closed() {
                        return Err(TransportError::Closed);
                    }
                    if std::time::Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err(TransportError::Closed),
            }
        }
    }

    fn queued(&self) -> usize {
        self.rx.len()
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}
