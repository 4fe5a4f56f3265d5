#!/usr/bin/env python3
"""A noregret reward plugin: one JSON request per line on stdin, one JSON response per line on stdout."""
import json
import sys

for line in sys.stdin:
    request = json.loads(line)  # {"id", "prompt", "completion", "reference"}
    completion = request["completion"]
    mentions = request["reference"] in completion
    concise = len(completion) <= 200
    response = {
        "id": request["id"],  # optional; if echoed it must match
        "reward": (1.0 if mentions else 0.0) * (1.0 if concise else 0.5),
        "metrics": {"mentions_reference": float(mentions), "concise": float(concise)},
    }
    print(json.dumps(response), flush=True)  # flush: noregret waits for each line
