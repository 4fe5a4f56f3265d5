//! Fault injection for the crash tests: `NOREGRET_FAULT=after_step:4` (or `in_checkpoint:4`)
//! aborts the process at that point, as a SIGKILL would: no destructors, nothing flushed.
//! `hang_after_step:4` stops it there instead (a learner stuck on I/O), so that a test can
//! SIGKILL it at a known point. A sampler process takes `hang_group:N`: it stops as it starts
//! its Nth group, holding that work, as a machine that dies mid-episode would.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use envs::{Env, EnvFactory, Problem};

/// Abort (or hang) if `NOREGRET_FAULT` names this point and step.
pub fn crash_if(point: &str, step: u64) {
    if let Ok(spec) = std::env::var("NOREGRET_FAULT") {
        if spec == format!("{point}:{step}") {
            eprintln!("NOREGRET_FAULT: aborting at {spec}");
            std::process::abort();
        }
        if spec == format!("hang_{point}:{step}") {
            eprintln!("NOREGRET_FAULT: hanging at {spec}");
            loop {
                std::thread::park();
            }
        }
    }
}

/// `factory`, made to hang the process as it starts the Nth group when `NOREGRET_FAULT` says
/// `hang_group:N`; `factory` itself otherwise.
pub fn hang_on_group(factory: Arc<dyn EnvFactory>, group_size: usize) -> Arc<dyn EnvFactory> {
    if std::env::var("NOREGRET_FAULT").is_ok_and(|s| s.starts_with("hang_group:")) {
        Arc::new(HangOnGroup { inner: factory, group_size: group_size.max(1), made: AtomicUsize::new(0) })
    } else {
        factory
    }
}

struct HangOnGroup {
    inner: Arc<dyn EnvFactory>,
    group_size: usize,
    made: AtomicUsize,
}

impl EnvFactory for HangOnGroup {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn make(&self, problem: Arc<Problem>) -> Box<dyn Env> {
        let made = self.made.fetch_add(1, Ordering::SeqCst);
        if made % self.group_size == 0 {
            crash_if("group", (made / self.group_size + 1) as u64);
        }
        self.inner.make(problem)
    }
}
