import json
import os
import subprocess

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from checkpoints import SPECS, make_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("NOREGRET_BIN", os.path.join(ROOT, "target", "release", "noregret"))

# Where the parity tests run noregret and the reference models: `cpu` (default), `cuda` or
# `cuda:N` (`make gpu-check` sets NOREGRET_TEST_DEVICE=cuda). On the GPU the log-prob tolerance is
# looser: cuBLAS and SDPA sum float32 products in other orders than the CPU kernels do.
DEVICE = os.environ.get("NOREGRET_TEST_DEVICE", "cpu")
if DEVICE != "cpu" and not (DEVICE.startswith("cuda") and torch.cuda.is_available()):
    raise RuntimeError(f"NOREGRET_TEST_DEVICE={DEVICE!r}, but torch sees no such device")
TOL = 1e-4 if DEVICE == "cpu" else 1e-3
# Flags for the noregret commands that load a model to run it.
DEVICE_ARGS = [] if DEVICE == "cpu" else ["--device", DEVICE]


def noregret(*args, stdin: str = "", check: bool = True, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """Run the CLI; return the completed process (stdout/stderr as text)."""
    proc = subprocess.run([BIN, "--threads", "2", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"noregret {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def reference_tokenizer(path):
    """tokenizer.json as written (AutoTokenizer would swap in a model-specific class for qwen2)."""
    with open(f"{path}/tokenizer_config.json") as f:
        template = json.load(f).get("chat_template")
    return PreTrainedTokenizerFast(tokenizer_file=f"{path}/tokenizer.json", bos_token="<bos>", eos_token="<eos>",
                                   chat_template=template)


def json_lines(text: str):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """name -> (directory, transformers model on DEVICE), made once per test session."""
    root = tmp_path_factory.mktemp("ckpt")
    return {name: (str(root / name), make_checkpoint(str(root / name), name, seed=i).to(DEVICE))
            for i, name in enumerate(SPECS)}
