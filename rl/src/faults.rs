//! Fault injection for the crash tests: `NOREGRET_FAULT=after_step:4` (or `in_checkpoint:4`)
//! aborts the process at that point, as a SIGKILL would: no destructors, nothing flushed.
//! `hang_after_step:4` stops it there instead (a learner stuck on I/O), so that a test can
//! SIGKILL it at a known point.

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
