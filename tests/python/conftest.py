import json
import os
import subprocess

import pytest

from checkpoints import SPECS, make_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("NOREGRET_BIN", os.path.join(ROOT, "target", "release", "noregret"))


def noregret(*args, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess:
    """Run the CLI; return the completed process (stdout/stderr as text)."""
    proc = subprocess.run([BIN, "--threads", "2", *args], input=stdin, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"noregret {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def json_lines(text: str):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """name -> (directory, transformers model), made once per test session."""
    root = tmp_path_factory.mktemp("ckpt")
    return {name: (str(root / name), make_checkpoint(str(root / name), name, seed=i)) for i, name in enumerate(SPECS)}
