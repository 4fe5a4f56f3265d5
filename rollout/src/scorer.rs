//! Env steps off the sampling threads. At a turn boundary a sampler hands the episode's env and
//! the turn's text to this pool and goes on generating for its other rows; the answer (a
//! tool's observation, or the final reward from the verifier or a plugin) comes back on the
//! sampler's own channel. A slow reward delays only the episodes waiting for it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use envs::{Env, Step};

use crate::control::{panic_message, Control};

/// Which episode: (group id, index in the group).
pub type EpisodeKey = (u64, usize);

pub struct StepJob {
    pub key: EpisodeKey,
    pub env: Box<dyn Env>,
    pub action: String,
    pub reply: Sender<StepDone>,
}

pub struct StepDone {
    pub key: EpisodeKey,
    pub env: Box<dyn Env>,
    pub step: Step,
    pub seconds: f64,
}

pub struct ScorerPool {
    jobs: Option<Sender<StepJob>>,
    handles: Vec<JoinHandle<()>>,
}

impl ScorerPool {
    /// `workers` threads (at least 1). A panic in an env or reward fails the run through
    /// `control`: a reward that cannot score must not silently train on zeros.
    pub fn start(workers: usize, control: Arc<Control>) -> ScorerPool {
        let (tx, rx) = unbounded::<StepJob>();
        let handles = (0..workers.max(1))
            .map(|i| {
                let rx: Receiver<StepJob> = rx.clone();
                let control = control.clone();
                std::thread::Builder::new()
                    .name(format!("reward-{i}"))
                    .spawn(move || work(rx, control))
                    .expect("spawning a reward thread")
            })
            .collect();
        ScorerPool { jobs: Some(tx), handles }
    }

    /// A handle samplers submit jobs through.
    pub fn submitter(&self) -> Sender<StepJob> {
        self.jobs.clone().expect("the pool is running")
    }

    /// Let the workers finish the jobs they hold and exit.
    pub fn shutdown(mut self) {
        self.jobs = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn work(rx: Receiver<StepJob>, control: Arc<Control>) {
    loop {
        let job = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) if control.stopped() => return,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if control.stopped() {
            return;
        }
        let StepJob { key, mut env, action, reply } = job;
        let start = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| env.step(&action))) {
            Ok(step) => {
                // The sampler may be gone (shutting down): nothing to hand back then.
                let _ = reply.send(StepDone { key, env, step, seconds: start.elapsed().as_secs_f64() });
            }
            Err(payload) => {
                control.fail(format!("reward worker failed on group {} episode {}: {}", key.0, key.1, panic_message(&*payload)));
                return;
            }
        }
    }
}
