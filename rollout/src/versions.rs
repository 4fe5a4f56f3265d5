//! Adapter versions from the learner to the samplers: a single slot, newest wins. The learner
//! publishes an immutable snapshot after each optimiser step; samplers look between micro-turns
//! and re-pack the newest one. Nothing queues up, and a snapshot is freed when the last sampler
//! holding it moves on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use policies::{Adapter, Model};

/// What samplers sample with at one version.
pub struct Snapshot {
    pub version: u64,
    /// None: the base model alone.
    pub adapter: Option<Adapter>,
    /// Full fine-tuning: the whole model at this version, replacing the samplers' base model.
    pub model: Option<Arc<Model>>,
    /// When it was published (for the swap latency: published → first token sampled with it).
    pub published: Instant,
}

// Safety: a snapshot is never written after it is published; samplers only read its tensors
// (shallow clones and an index_select when packing), which libtorch allows from many threads.
unsafe impl Sync for Snapshot {}

impl Snapshot {
    pub fn new(version: u64, adapter: Option<Adapter>) -> Snapshot {
        Snapshot { version, adapter, model: None, published: Instant::now() }
    }

    /// A fully fine-tuned model's weights at `version`.
    pub fn full(version: u64, model: Arc<Model>) -> Snapshot {
        Snapshot { version, adapter: None, model: Some(model), published: Instant::now() }
    }
}

pub struct VersionSlot {
    latest: Mutex<Arc<Snapshot>>,
    version: AtomicU64,
    changed: Condvar,
}

impl VersionSlot {
    pub fn new(initial: Snapshot) -> VersionSlot {
        let version = AtomicU64::new(initial.version);
        VersionSlot { latest: Mutex::new(Arc::new(initial)), version, changed: Condvar::new() }
    }

    /// Make `snapshot` the newest version. Versions only go up; an older one is ignored.
    pub fn publish(&self, snapshot: Snapshot) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        if snapshot.version < latest.version {
            return;
        }
        self.version.store(snapshot.version, Ordering::SeqCst);
        *latest = Arc::new(snapshot);
        self.changed.notify_all();
    }

    /// Make `snapshot` the newest version even if its number is lower: a resumed learner's
    /// versions start again from its checkpoint.
    pub fn replace(&self, snapshot: Snapshot) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        self.version.store(snapshot.version, Ordering::SeqCst);
        *latest = Arc::new(snapshot);
        self.changed.notify_all();
    }

    /// The newest version number (cheap: samplers check it every micro-turn).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    pub fn latest(&self) -> Arc<Snapshot> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Wait until a version newer than `than` is published, or `timeout` passes; returns the
    /// newest version.
    pub fn wait_newer(&self, than: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        while latest.version <= than {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            latest = self.changed.wait_timeout(latest, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        latest.version
    }
}
