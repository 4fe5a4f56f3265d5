"""How close to the matmul ceiling can *any* float32 implementation get on these workloads?

Times only the matrix products a workload needs, with nothing else in between: every linear layer
of the model at the workload's row count, cycling through the layers' own weights (so weights
come from memory as in a real step, not from cache), the same `mm` the ceiling is measured with.
The result bounds what a whole step can reach: attention, norms, activations, sampling and
dispatch only add to it.

  python bench/gemm_floor.py --model target/bench/small

Prints one JSON line per workload: GFLOP/s of the bare products and their % of the ceiling.
"""
import argparse
import json

import torch

from peer import ceiling_gflops, median_time  # same folder: the peers' helpers


def linear_shapes(cfg):
    """(in, out) of every matmul of one layer, fused as noregret runs them, and of the head."""
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    layer = [(h, q + 2 * kv), (q, h), (h, 2 * i), (i, h)]
    return layer, (h, cfg["vocab_size"])


def model_cli(doc):
    """The probes' command line (--model DIR, --threads N): sets torch's threads, returns the config."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    return json.load(open(f"{args.model}/config.json")), args.threads


def main():
    cfg, threads = model_cli(__doc__)
    layer, head = linear_shapes(cfg)
    weights = [torch.randn(k, n) for _ in range(cfg["num_hidden_layers"]) for k, n in layer] + [torch.randn(*head)]

    ceiling = max(ceiling_gflops(runs=7).values())
    print(json.dumps({"bench": "ceiling", "gflops": ceiling, "threads": threads}))

    # Decode: one step's products at batch M. Learner: forward x·W and input gradient dy·Wᵀ at 16 × 96 rows.
    workloads = [("decode", m, False) for m in (1, 16, 64)] + [("learner step (LoRA: forward + input grads)", 1536, True)]
    for name, m, backward in workloads:
        xs = {k: torch.randn(m, k) for k, _ in layer + [head]}
        dys = {n: torch.randn(m, n) for _, n in layer + [head]}

        def run():
            for w in weights:
                k, n = w.shape
                torch.mm(xs[k], w)
                if backward:
                    torch.mm(dys[n], w.t())

        flops = sum(2 * m * w.shape[0] * w.shape[1] for w in weights) * (2 if backward else 1)
        gf = flops / median_time(run, 7)[0] / 1e9
        print(json.dumps({"bench": "gemm_floor", "workload": name, "rows": m, "gflops": gf,
                          "pct_of_ceiling": 100 * gf / ceiling}))


if __name__ == "__main__":
    main()
