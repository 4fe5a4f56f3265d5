#!/usr/bin/env python3
"""`make gpu-check`: noregret on a CUDA GPU, in one JSON line on stdout.

On a machine where torch sees CUDA it runs
  (i)  the parity tests against transformers and peft (tests/python/test_parity.py and
       test_lora.py) with NOREGRET_TEST_DEVICE=cuda: noregret and the reference models both on
       the GPU, float32, log-probs within 1e-3 (1e-4 on the CPU; see tests/python/conftest.py);
  (ii) a short run of the default experiment (configs/arith.toml, 20 steps) with
       model.device=cuda,
and prints {"cuda": true, "device_name", "parity": {passed, failed, ...}, "run": {heldout accuracy
at the start and the end, seconds per step, ...}, "ok"}. The exit status is 1 if a parity test or
the run failed (their output then goes to stderr).

Without CUDA it prints {"cuda": false, "reason": ...} and exits 0.

    NOREGRET_BIN=target/release/noregret python bench/gpu_check.py [--steps 20] [--device cuda:1]

`--device cpu` runs the same checks on the CPU (tests/python/test_default_experiment.py runs it that
way with `--steps 2` and one parity test, to check this script where there is no GPU).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("NOREGRET_BIN", os.path.join(ROOT, "target", "release", "noregret"))
PARITY_TESTS = ["tests/python/test_parity.py", "tests/python/test_lora.py"]


def junit_counts(path):
    """passed/failed/errors/skipped and the names of failed tests from a pytest --junitxml file."""
    root = ET.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failed = []
    for case in root.iter("testcase"):
        kinds = {child.tag for child in case}
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if "failure" in kinds:
            counts["failed"] += 1
            failed.append(name)
        elif "error" in kinds:
            counts["errors"] += 1
            failed.append(name)
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts, failed


def parity(device, tests, tmp):
    junit = os.path.join(tmp, "parity.xml")
    env = dict(os.environ, NOREGRET_TEST_DEVICE=device, NOREGRET_BIN=BIN)
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                           *tests], cwd=ROOT, env=env, capture_output=True, text=True)
    out = {"seconds": round(time.time() - started, 1)}
    if not os.path.exists(junit):
        sys.stderr.write(proc.stdout + proc.stderr)
        return {**out, "passed": 0, "failed": 0, "errors": 1, "skipped": 0, "error": "pytest wrote no report"}
    counts, failed = junit_counts(junit)
    out.update(counts)
    if failed or proc.returncode != 0:
        out["failed_tests"] = failed
        sys.stderr.write(proc.stdout[-20000:] + proc.stderr[-5000:])
    return out


def run(device, steps, tmp):
    out_dir = os.path.join(tmp, "run")
    cmd = [BIN, "train", "configs/arith.toml", "--set", f"model.device={device}", "--set", f"rl.steps={steps}",
           "--set", "eval.every=0", "--set", "eval.samples=0", "--set", "run.checkpoint_every=0",
           "--set", f"run.out={out_dir}"]
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = round(time.time() - started, 1)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-5000:])
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"ok": False, "wall_seconds": wall, "error": last}
    with open(os.path.join(out_dir, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    step_seconds = [line["step_seconds"] for line in lines if "step_seconds" in line]
    return {
        "ok": summary["steps"] == steps,
        "steps": summary["steps"],
        "heldout_accuracy_start": summary["heldout_accuracy_start"],
        "heldout_accuracy_end": summary["heldout_accuracy_end"],
        # Median over steps: the first steps include CUDA warm-up.
        "seconds_per_step": round(statistics.median(step_seconds), 4) if step_seconds else None,
        "seconds_per_step_mean": round(statistics.fmean(step_seconds), 4) if step_seconds else None,
        "wall_seconds": wall,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="RL steps of the default experiment (default 20)")
    ap.add_argument("--device", default="cuda", help="cuda or cuda:N (default cuda); cpu to test this script")
    ap.add_argument("--tests", nargs="+", default=PARITY_TESTS, help="pytest files or node ids for (i)")
    args = ap.parse_args()

    import torch

    result = {"cuda": torch.cuda.is_available(), "torch": torch.__version__}
    if args.device == "cpu":
        result["device_name"] = "cpu"
    elif not result["cuda"]:
        result["reason"] = "torch sees no CUDA device: nothing was run"
        print(json.dumps(result))
        return 0
    else:
        index = int(args.device.split(":")[1]) if ":" in args.device else 0
        result["device_name"] = torch.cuda.get_device_name(index)
    result["device"] = args.device
    result["binary"] = BIN
    with tempfile.TemporaryDirectory() as tmp:
        result["parity"] = parity(args.device, args.tests, tmp)
        result["run"] = run(args.device, args.steps, tmp)
    p = result["parity"]
    result["ok"] = p["failed"] == 0 and p["errors"] == 0 and p["passed"] > 0 and result["run"]["ok"]
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
