// Per-thread CPU budgets: a sampler thread and the learner thread can each be held to their own
// number of OpenMP/MKL threads, so that workers running side by side do not oversubscribe the
// cores. libtorch's own setter is process-wide; OpenMP's and MKL's local setters are not.

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <omp.h>

extern "C" {

void nr_set_thread_budget(int threads) {
  // libtorch initialises each thread's count lazily, from the process-wide value, on the thread's
  // first parallel op; that first call would undo a budget set before it. Run it now, both in
  // libtorch itself and in the copy of at::parallel_for inlined into these kernels.
  at::get_num_threads();
  at::parallel_for(0, 1, 1, [](int64_t, int64_t) {});
  omp_set_num_threads(threads);
  // MKL's products keep their own count; its thread-local setter exists only in MKL builds.
  // The by-value C entry point is MKL_Set_Num_Threads_Local (mkl_set_num_threads_local is the
  // Fortran one, which takes a pointer).
  using SetLocal = int (*)(int);
  static SetLocal set_local = reinterpret_cast<SetLocal>(dlsym(RTLD_DEFAULT, "MKL_Set_Num_Threads_Local"));
  if (set_local != nullptr) set_local(threads);
}

int nr_thread_budget() { return omp_get_max_threads(); }

}  // extern "C"
