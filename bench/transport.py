"""Samplers through Redis against samplers in-process: the same training run both ways.

  python bench/transport.py [--workload sampling|arith] [--config FILE] [--samplers 3] [--processes P]
                            [--steps 30] [--rounds 3]

Runs `noregret train` with S sampler threads in-process, then the same experiment with
`--transport redis://…` and S sampler threads in P `noregret sampler` processes (default P = S),
on a redis-server this script
starts on a free local port (no persistence), interleaved for --rounds rounds. Each process
gets the thread budget of its in-process counterpart: the learner --threads, each sampler
--threads / S. Workloads:

- `sampling` (default): a random `tiny` checkpoint made here, 16 groups of 8 episodes of up to
  64 tokens per step, and a reward that is the same for every episode, so the learner has
  nothing to train (its groups are dropped as uniform) and only publishes a new version per
  step: every second is sampling and transport, which is what this compares;
- `arith`: the default experiment (configs/arith.toml), where the learner's step dominates;
- `--config FILE`: any experiment file.

Reported, as medians over the rounds:

- groups/s: groups consumed per second of wall time in steady state (from the end of step
  --warmup to the end of the next-to-last step, whose line waits for the final evaluation);
- CPU per group: the CPU time all processes of a run spent in that window (learner, samplers
  and, for Redis, the server), per group. On a shared machine this is the steadier figure: a
  busy neighbour slows wall time far more than it changes the work done;
- swap latency: from a version being published to the first token a sampler draws with it
  (the engine measures it; through Redis, clocks of one machine);
- the Redis run's overhead against the in-process one, per round, then the median.

Needs the release binary (NOREGRET_BIN, default target/release/noregret) and redis-server.
Raw per-round figures go to WORKDIR/transport.jsonl.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.environ.get("NOREGRET_BIN", os.path.join(ROOT, "target", "release", "noregret"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis():
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


def overrides(args, out):
    return ["--set", f"rl.steps={args.steps}", "--set", "eval.every=0", "--set", "eval.samples=0", "--set", "eval.problems=4",
            "--set", f"run.out={out}", "--set", "run.checkpoint_every=0", "--set", f"rollout.samplers={args.samplers}",
            "--set", f"rollout.sampler_threads={max(1, args.threads // args.samplers)}"]


SAMPLING = """# Sampling and transport only: the reward is 0 for every episode, so every group is uniform
# and the learner just publishes a version per step.
[model]
path = "{model}"

[env.problems]
source = "arith"
level = "addsub2"

[[reward]]
kind = "length_penalty"
target_chars = 100000
max_chars = 100001

[rollout]
group_size = 8
groups_per_step = 16
max_new_tokens = 64
"""


def workload_config(args):
    if args.config:
        return args.config
    if args.workload == "arith":
        return os.path.join(ROOT, "configs", "arith.toml")
    model = os.path.join(args.workdir, "transport-tiny")
    if not os.path.exists(os.path.join(model, "model.safetensors")):
        subprocess.run([BIN, "init-model", "--preset", "tiny", "--out", model], check=True, capture_output=True)
    path = os.path.join(args.workdir, "transport-sampling.toml")
    with open(path, "w") as f:
        f.write(SAMPLING.format(model=model))
    return path


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """User + system CPU time of these processes (all their threads) so far."""
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total / TICK


def step_lines(run_dir):
    try:
        return [l for l in (json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl"))) if "loss" in l]
    except (OSError, ValueError):
        return []


def measure(learner, others, run_dir, args):
    """Steady state between the end of step --warmup and the end of the next-to-last step (the
    last one's line waits for the final evaluation): (groups/s, CPU seconds per group of all
    processes, median swap latency in ms)."""
    pids = [learner.pid] + [p.pid for p in others]
    marks = {}
    while learner.poll() is None:
        n = len(step_lines(run_dir))
        for k in (args.warmup, args.steps - 1):
            if n >= k and k not in marks:
                marks[k] = (time.monotonic(), cpu_seconds(pids))
        time.sleep(0.005)
    if learner.returncode != 0:
        sys.exit(f"the learner failed: {open(run_dir + '.log').read()}")
    steps = step_lines(run_dir)[args.warmup:args.steps - 1]
    # The groups of each batch (uniform ones included).
    groups = sum(len(l["groups"]) for l in steps)
    (t0, c0), (t1, c1) = marks[args.warmup], marks[args.steps - 1]
    latencies = [l["swap_latency_ms"] for l in steps if "swap_latency_ms" in l]
    return groups / (t1 - t0), (c1 - c0) / groups, statistics.median(latencies) if latencies else float("nan")


def in_process(args, out):
    cmd = [BIN, "--threads", str(args.threads), "train", args.config, *overrides(args, out)]
    learner = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(out + ".log", "w"))
    return measure(learner, [], out, args)


def through_redis(args, out, server, url, prefix):
    # P processes of S/P sampler threads each, every thread with the in-process thread's budget.
    threads_each = args.samplers // args.processes
    budget = str(max(1, args.threads // args.samplers) * threads_each)
    common = overrides(args, out) + ["--set", f"rollout.redis_prefix={prefix}"]
    learner = subprocess.Popen([BIN, "--threads", str(args.threads), "train", args.config, "--transport", url, *common],
                               stdout=subprocess.DEVNULL, stderr=open(out + ".log", "w"))
    sampler = [BIN, "--threads", budget, "sampler", args.config, "--connect", url, "--samplers", str(threads_each), *common]
    samplers = [subprocess.Popen(sampler, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(args.processes)]
    result = measure(learner, samplers + [server], out, args)
    for s in samplers:
        try:
            s.wait(timeout=30)
        except subprocess.TimeoutExpired:
            s.kill()
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["sampling", "arith"], default="sampling")
    ap.add_argument("--config", help="an experiment file instead of a workload")
    ap.add_argument("--samplers", type=int, default=3, help="sampler threads, in-process and through Redis alike")
    ap.add_argument("--processes", type=int, help="sampler processes they are spread over (default: one each)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3, help="first steps left out (start-up, weight packing)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default=os.path.join(ROOT, "target", "bench"))
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    args.config = workload_config(args)
    args.processes = args.processes or args.samplers
    if args.samplers % args.processes:
        sys.exit("--samplers must be a multiple of --processes")
    server, url = start_redis()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                local = in_process(args, os.path.join(tmp, f"local-{r}"))
                remote = through_redis(args, os.path.join(tmp, f"redis-{r}"), server, url, f"bench{r}")
                rows.append({"round": r, "processes": args.processes, "in_process_groups_per_s": local[0], "redis_groups_per_s": remote[0],
                             "in_process_cpu_s_per_group": local[1], "redis_cpu_s_per_group": remote[1],
                             "in_process_swap_ms": local[2], "redis_swap_ms": remote[2]})
                print(f"round {r}: in-process {local[0]:.1f} groups/s {1e3 * local[1]:.1f} CPU ms/group, "
                      f"redis {remote[0]:.1f} groups/s {1e3 * remote[1]:.1f} CPU ms/group", file=sys.stderr)
    finally:
        server.kill()
    with open(os.path.join(args.workdir, "transport.jsonl"), "a") as f:
        for row in rows:
            f.write(json.dumps({**row, "config": args.config, "samplers": args.samplers, "threads": args.threads, "steps": args.steps}) + "\n")
    med = lambda k: statistics.median(r[k] for r in rows)
    overhead = lambda a, b, inverse: statistics.median(sorted((1 - r[b] / r[a]) if inverse else (r[b] / r[a] - 1) for r in rows))
    print("| transport | samplers | groups/s | CPU ms per group (all processes) | swap latency (ms) |")
    print("|---|---|---|---|---|")
    print(f"| in-process | {args.samplers} threads | {med('in_process_groups_per_s'):.1f} | {1e3 * med('in_process_cpu_s_per_group'):.1f} | "
          f"{med('in_process_swap_ms'):.1f} |")
    print(f"| Redis | {args.samplers} threads in {args.processes} process{'es' if args.processes > 1 else ''} | {med('redis_groups_per_s'):.1f} | {1e3 * med('redis_cpu_s_per_group'):.1f} | "
          f"{med('redis_swap_ms'):.1f} |")
    print(f"\nRedis overhead (median of per-round ratios): groups/s {100 * overhead('in_process_groups_per_s', 'redis_groups_per_s', True):.1f} %, "
          f"CPU per group {100 * overhead('in_process_cpu_s_per_group', 'redis_cpu_s_per_group', False):.1f} %")


if __name__ == "__main__":
    main()
