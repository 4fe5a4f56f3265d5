#!/usr/bin/env python3
"""Runs math-verify (PyPI) over the rewards corpus, as a second opinion and as the benchmark peer.

Usage: math_verify_peer.py CORPUS.jsonl [--min-seconds S] [--disagreements]

Prints one JSON line: {"cases", "passes", "seconds", "per_second", "slow_cases",
"per_second_without_slow", "results"} where results[i] is math-verify's verdict on case i (first
pass) and slow cases are those that took over a second (math-verify's own timeouts). With --disagreements, also prints to stderr the
cases where math-verify differs from the human label.
"""
import json
import sys
import time

from math_verify import parse, verify


def gold_text(gold):
    # math-verify reads LaTeX inside delimiters; give it the gold the way its docs do.
    if "####" in gold:
        gold = gold.split("####")[-1].strip()
    if "\\boxed" in gold:
        return gold
    return "$\\boxed{" + gold + "}$"


def judge(gold, response):
    try:
        return bool(verify(parse(gold_text(gold)), parse(response)))
    except Exception:  # a crash is "not equivalent", as in our verifier
        return False


def main():
    args = sys.argv[1:]
    path = args[0]
    min_seconds = float(args[args.index("--min-seconds") + 1]) if "--min-seconds" in args else 0.0
    cases = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    start = time.perf_counter()
    results, slow_seconds, slow_cases = [], 0.0, 0
    for c in cases:
        t0 = time.perf_counter()
        results.append(judge(c["gold"], c["response"]))
        took = time.perf_counter() - t0
        if took > 1.0:  # a case that ran into math-verify's own timeout
            slow_cases += 1
            slow_seconds += took
    first_pass = time.perf_counter() - start
    passes = 1
    while time.perf_counter() - start < min_seconds:
        for c in cases:
            judge(c["gold"], c["response"])
        passes += 1
    seconds = time.perf_counter() - start
    if "--disagreements" in args:
        for i, (c, r) in enumerate(zip(cases, results)):
            if r != c["correct"]:
                print(f"line {i + 1}: label {c['correct']} math-verify {r}: {c['gold']!r} | {c['response']!r}", file=sys.stderr)
    print(json.dumps({
        "cases": len(cases),
        "passes": passes,
        "seconds": seconds,
        "per_second": len(cases) * passes / seconds,
        "slow_cases": slow_cases,
        "per_second_without_slow": (len(cases) - slow_cases) / max(first_pass - slow_seconds, 1e-9),
        "results": results,
    }))


if __name__ == "__main__":
    main()
