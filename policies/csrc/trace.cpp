// An op-level trace of libtorch's work (forward ops, autograd backward nodes), written as a
// chrome://tracing file by libtorch's own profiler. Rust holds the recorder through an opaque
// handle; failures come back as null plus a message, never as an exception across the boundary.

#include <torch/csrc/autograd/profiler_legacy.h>

#include <string>

namespace {
thread_local std::string trace_error;
}

extern "C" {

const char* nr_trace_error() { return trace_error.c_str(); }

void* nr_trace_begin(const char* path) {
  try {
    return new torch::autograd::profiler::RecordProfile(std::string(path));
  } catch (const std::exception& e) {
    trace_error = e.what();
  } catch (...) {
    trace_error = "unknown C++ exception";
  }
  return nullptr;
}

// Stops recording and writes the file.
void nr_trace_end(void* recorder) {
  try {
    delete static_cast<torch::autograd::profiler::RecordProfile*>(recorder);
  } catch (...) {
  }
}

}  // extern "C"
