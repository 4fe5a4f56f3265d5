"""noregret's benchmarks, each beside its Python peer in the same run, as one Markdown report.

  python bench/run_bench.py [--only generate,lora,train,floor,rollout,rlstep] [--workdir DIR] [--threads 2]

Needs the release binary (NOREGRET_BIN, default target/release/noregret) and the venv with torch,
transformers and peft. Models are made locally (bench/make_model.py); nothing is downloaded.
Each figure is the median of --rounds interleaved repeats (noregret and its peer alternate), each
repeat itself a median of --runs timed runs after a warm-up; every round starts by measuring the
matmul ceiling again, and a share of the ceiling is the median of each round's own share.
Results: the Markdown tables on stdout, raw JSON lines (with every round's figure and ceiling) in
WORKDIR/results.jsonl. The `floor` part times the bare matmuls of each workload
(bench/gemm_floor.py): the most any float32 implementation built on the same matmul could reach.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.environ.get("NOREGRET_BIN", os.path.join(ROOT, "target", "release", "noregret"))
PY = sys.executable
# Matmul FLOPs per token: every linear weight (the embedding lookup is not a matmul).
MATMUL_PARAMS = {"tiny": 832_512, "small": 25_350_144}


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    rows = []
    for line in out.stdout.splitlines():
        # Results are JSON lines; peers' own logs (e.g. TRL's printed dicts) are not.
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def ours(threads, *args):
    return run([BIN, "--threads", str(threads), "bench", *args])


def peer(threads, *args):
    return run([PY, os.path.join(HERE, "peer.py"), "--threads", str(threads), *args])


def rounds(n, threads, *commands):
    """Run each command n times, interleaved (A B A B ...), so that a noisy neighbour hits all
    sides alike, with the matmul ceiling measured again at the start of every round: this VM's
    speed drifts by ±10 % over minutes, so each figure is held against the ceiling of its own
    round. Returns, per command, one row per configuration holding the median round (by tok/s),
    with every round's tok/s in `rounds_tok_per_s` and its ceiling in `rounds_ceiling`."""
    results = [[] for _ in commands]
    for _ in range(n):
        ceiling = max(r["gflops"] for r in peer(threads, "ceiling"))
        for i, command in enumerate(commands):
            results[i].append([dict(row, ceiling=ceiling) for row in command()])
    merged = []
    for per_round in results:
        rows = []
        for config_rows in zip(*per_round):
            ranked = sorted(config_rows, key=lambda r: r["tok_per_s"])
            row = dict(ranked[len(ranked) // 2])
            row["rounds_tok_per_s"] = [round(r["tok_per_s"], 1) for r in config_rows]
            row["rounds_ceiling"] = [round(r["ceiling"], 1) for r in config_rows]
            rows.append(row)
        merged.append(rows)
    return merged


def share(row, gflops_per_tok_per_s):
    """Median over the rounds of (round's GFLOP/s / that round's ceiling), in %."""
    shares = sorted(t * gflops_per_tok_per_s / c for t, c in zip(row["rounds_tok_per_s"], row["rounds_ceiling"]))
    return 100 * shares[len(shares) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="generate,lora,train,floor,rollout,rlstep")
    ap.add_argument("--workdir", default=os.path.join(ROOT, "target", "bench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per measurement (median)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repeats of each measurement (median)")
    args = ap.parse_args()
    parts, th, runs, n = args.only.split(","), args.threads, str(args.runs), args.rounds
    models = {}
    for preset in ("tiny", "small"):
        models[preset] = os.path.join(args.workdir, preset)
        if not os.path.exists(os.path.join(models[preset], "model.safetensors")):
            subprocess.run([PY, os.path.join(HERE, "make_model.py"), "--out", models[preset], "--preset", preset], check=True,
                           capture_output=True)
    rows = []

    if "generate" in parts:
        print("### Generation: small preset, prompt 32, 64 new tokens, pure sampling\n")
        print("| batch | noregret tok/s | HF generate tok/s | ratio | noregret GFLOP/s (new tokens) | % of matmul ceiling | incl. prefill | HF: % of ceiling / incl. prefill |")
        print("|---|---|---|---|---|---|---|---|")
        mine, hf = rounds(n, th, lambda: ours(th, "generate", "--model", models["small"], "--runs", runs),
                          lambda: peer(th, "generate", "--model", models["small"], "--runs", runs))
        per_new_token = 2 * MATMUL_PARAMS["small"] / 1e9  # GFLOP per new token; x1.5 counting the prompt's 32
        for a, b in zip(mine, hf):
            gf = a["tok_per_s"] * per_new_token
            print(f"| {a['batch']} | {a['tok_per_s']:.0f} | {b['tok_per_s']:.0f} | {a['tok_per_s'] / b['tok_per_s']:.2f}x | "
                  f"{gf:.0f} | {share(a, per_new_token):.0f}% | {share(a, per_new_token * 1.5):.0f}% | "
                  f"{share(b, per_new_token):.0f}% / {share(b, per_new_token * 1.5):.0f}% |")
        rows += mine + hf
        print()

    if "lora" in parts:
        print("### LoRA rank 2 on all linear layers: sampling cost (small preset)\n")
        print("| batch | noregret no adapter | noregret r=2 | slowdown | HF no adapter | peft r=2 | peft slowdown |")
        print("|---|---|---|---|---|---|---|")
        gen = ("generate", "--model", models["small"], "--runs", runs, "--batch", "16,64")
        base, lora, hf, hf_lora = rounds(n, th, lambda: ours(th, *gen), lambda: ours(th, *gen, "--lora-rank", "2"),
                                         lambda: peer(th, *gen), lambda: peer(th, *gen, "--lora-rank", "2"))
        for a, b, c, d in zip(base, lora, hf, hf_lora):
            print(f"| {a['batch']} | {a['tok_per_s']:.0f} | {b['tok_per_s']:.0f} | {100 * (1 - b['tok_per_s'] / a['tok_per_s']):.0f}% | "
                  f"{c['tok_per_s']:.0f} | {d['tok_per_s']:.0f} | {100 * (1 - d['tok_per_s'] / c['tok_per_s']):.0f}% |")
        rows += base + lora + hf + hf_lora
        print()

    if "train" in parts:
        print("### Learner step: batch 16 x 96 tokens, forward + backward + AdamW\n")
        print("| model | mode | noregret tok/s | PyTorch+peft tok/s | ratio | noregret GFLOP/s | % of ceiling | peer % of ceiling | peak RSS noregret / peer (MiB) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for preset in ("tiny", "small"):
            for rank in ("2", "0"):
                step = ("train-step", "--model", models[preset], "--lora-rank", rank, "--runs", runs)
                (a,), (b,) = rounds(n, th, lambda: ours(th, *step), lambda: peer(th, *step))
                # GFLOP per token: forward 2N + input-gradients 2N (+ weight gradients 2N in full FT).
                per_token = (4 if rank != "0" else 6) * MATMUL_PARAMS[preset] / 1e9
                mode = f"LoRA r={rank}" if rank != "0" else "full FT"
                print(f"| {preset} | {mode} | {a['tok_per_s']:.0f} | {b['tok_per_s']:.0f} | {a['tok_per_s'] / b['tok_per_s']:.2f}x | "
                      f"{a['tok_per_s'] * per_token:.0f} | {share(a, per_token):.0f}% | {share(b, per_token):.0f}% | "
                      f"{a['peak_rss_mib']:.0f} / {b['peak_rss_mib']:.0f} |")
                rows += [a, b]
        print()

    if "floor" in parts:
        print("### Bare matmuls of each workload (small preset): the float32 floor\n")
        print("| workload | rows | GFLOP/s | % of ceiling |")
        print("|---|---|---|---|")
        floor = run([PY, os.path.join(HERE, "gemm_floor.py"), "--model", models["small"], "--threads", str(th)])
        for r in floor:  # against the ceiling gemm_floor measures itself, just before
            if r["bench"] == "gemm_floor":
                print(f"| {r['workload']} | {r['rows']} | {r['gflops']:.0f} | {r['pct_of_ceiling']:.0f}% |")
        rows += floor
        print()

    if "rollout" in parts:
        print("### Rollout engine: a new adapter version every micro-turn (small preset, batch 16, prompt 32, 64 new tokens)\n")
        print("| samplers | engine, new version every micro-turn, cache kept | same, cache recomputed | engine, one version | generate on its own thread | generate on the main thread | overhead vs generate on a thread (kept / recomputed) | vs the main thread | swap latency (mean / max) | peak RSS samplers (MiB) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for samplers in ("1", "4"):
            (r,) = ours(th, "rollout", "--model", models["small"], "--runs", runs, "--samplers", samplers)
            print(f"| {samplers} | {r['tok_per_s_new_version_every_micro_turn']:.0f} | {r['tok_per_s_new_version_every_micro_turn_recompute']:.0f} | "
                  f"{r['tok_per_s_fixed_version']:.0f} | {r['tok_per_s_generate_on_thread']:.0f} | {r['tok_per_s_generate']:.0f} | "
                  f"{100 * r['overhead_vs_generate_on_thread']:.1f}% / {100 * r['overhead_vs_generate_on_thread_recompute']:.0f}% | "
                  f"{100 * r['overhead_vs_generate']:.0f}% | "
                  f"{r['swap_latency_ms']:.0f} / {r['swap_latency_max_ms']:.0f} ms | {r['peak_rss_mib_samplers']:.0f} |")
            rows.append(r)
        print()

    if "rlstep" in parts:
        print("### One RL step: 16 completions (2 prompts x 8), up to 64 new tokens, rank-2 LoRA, against TRL's GRPOTrainer\n")
        print("| model | noregret s/step (s=0) | noregret s/step (s=1) | TRL s/step | ratio (s=0) | noregret step: waiting for samples / learner |")
        print("|---|---|---|---|---|---|")
        for preset in ("tiny", "small"):
            (a,) = ours(th, "rl-step", "--model", models[preset], "--steps", "8")
            (b,) = ours(th, "rl-step", "--model", models[preset], "--steps", "8", "--max-staleness", "1")
            (c,) = peer(th, "grpo", "--model", models[preset], "--steps", "6")
            print(f"| {preset} | {a['s_per_step']:.3f} | {b['s_per_step']:.3f} | {c['s_per_step']:.3f} | {c['s_per_step'] / a['s_per_step']:.2f}x | "
                  f"{a['wait_s']:.3f} / {a['learner_s']:.3f} s |")
            rows += [a, b, c]
        print()

    ceilings = [c for r in rows for c in r.get("rounds_ceiling", [])]
    if ceilings:
        print(f"matmul ceiling (float32 mm, {th} threads), measured at the start of each round: "
              f"{min(ceilings):.0f}-{max(ceilings):.0f} GFLOP/s\n")
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "results.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
