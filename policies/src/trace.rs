//! Op-level traces (`noregret bench ... --trace FILE`): every libtorch op and autograd node run
//! while a [`Trace`] is alive, with its duration, in a chrome://tracing / Perfetto file.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_void};
use std::path::Path;

use crate::error::{Error, Result};

extern "C" {
    fn nr_trace_error() -> *const c_char;
    fn nr_trace_begin(path: *const c_char) -> *mut c_void;
    fn nr_trace_end(recorder: *mut c_void);
}

/// Records on this thread (and the threads its ops fan out to) until dropped; the file is
/// written on drop.
pub struct Trace(*mut c_void);

impl Trace {
    pub fn start(path: &Path) -> Result<Trace> {
        let c_path = CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| Error::bad_file(path, "path contains a NUL byte"))?;
        let recorder = unsafe { nr_trace_begin(c_path.as_ptr()) };
        if recorder.is_null() {
            let message = unsafe { CStr::from_ptr(nr_trace_error()) }.to_string_lossy().into_owned();
            return Err(Error::bad_file(path, format!("cannot start a trace: {message}")));
        }
        Ok(Trace(recorder))
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        unsafe { nr_trace_end(self.0) }
    }
}
