"""Would pre-packed weights speed up decoding? MKL's packed GEMM against plain `mm`.

libtorch exports MKL's cblas_sgemm_pack / cblas_sgemm_compute. This probe packs (random) weights
of a model's shapes once and times one decode step's matmuls both ways at batch 1, 16 and 64, and
prints the packed buffers' size and what they add to resident memory.

  python bench/packed_gemm_probe.py --model target/bench/small

Measured 2026-11-29 on the 2-core VM: batch 1 +0-5 %, 4 +15 %, 16 +15-30 %, 64 +23 %, 2048 -1 % on
the bare matmuls. MKL asks for 386 MB of buffers for 101 MB of weights but writes only ~97 MB of
them; the rest is never paged in. A buffer packed once works for any row count. The decoder now
packs (policies/src/model.rs).
"""
import ctypes
import os

import torch

from gemm_floor import linear_shapes, model_cli  # same folder
from peer import median_time

ROW_MAJOR, NO_TRANS, B_MATRIX, PACKED = 101, 111, 162, 151


def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))


def main():
    cfg, _ = model_cli(__doc__)
    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    lib.cblas_sgemm_pack_get_size.restype = ctypes.c_size_t
    lib.cblas_sgemm_pack_get_size.argtypes = [ctypes.c_int] * 4
    lib.cblas_sgemm_pack.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.cblas_sgemm_compute.argtypes = [ctypes.c_int] * 6 + [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                                                            ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
    shapes = linear_shapes(cfg)[0] * cfg["num_hidden_layers"]
    weights = [torch.randn(k, n) for k, n in shapes]
    before = rss_mb()
    packs = []
    for w in weights:
        k, n = w.shape
        buf = torch.empty(lib.cblas_sgemm_pack_get_size(B_MATRIX, 64, n, k) // 4 + 16)
        lib.cblas_sgemm_pack(ROW_MAJOR, B_MATRIX, NO_TRANS, 64, n, k, 1.0, w.data_ptr(), n, buf.data_ptr())
        packs.append(buf)
    print(f"packed buffers {sum(p.numel() * 4 for p in packs) / 1e6:.0f} MB (resident: +{rss_mb() - before:.0f} MB), "
          f"weights {sum(w.numel() * 4 for w in weights) / 1e6:.0f} MB")
    for m in (1, 16, 64):
        xs = {k: torch.randn(m, k) for k, _ in shapes}
        outs = {n: torch.empty(m, n) for _, n in shapes}

        def plain():
            for w in weights:
                torch.mm(xs[w.shape[0]], w)

        def packed():
            for w, p in zip(weights, packs):
                k, n = w.shape
                lib.cblas_sgemm_compute(ROW_MAJOR, NO_TRANS, PACKED, m, n, k, xs[k].data_ptr(), k, p.data_ptr(), n, 0.0,
                                        outs[n].data_ptr(), n)

        flops = sum(2 * m * k * n for k, n in shapes)
        for f in (plain, packed, plain, packed):
            seconds = median_time(f, 9)[0]
            print(f"batch {m:3d} {f.__name__:7s} {seconds * 1e3:6.2f} ms {flops / seconds / 1e9:4.0f} GFLOP/s")


if __name__ == "__main__":
    main()
