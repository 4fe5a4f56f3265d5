import json
import os
import subprocess

import pytest
from transformers import PreTrainedTokenizerFast

from checkpoints import SPECS, make_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("NOREGRET_BIN", os.path.join(ROOT, "target", "release", "noregret"))


def noregret(*args, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess:
    """Run the CLI; return the completed process (stdout/stderr as text)."""
    proc = subprocess.run([BIN, "--threads", "2", *args], input=stdin, capture_output=True, text=True, timeout=300)
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
    """name -> (directory, transformers model), made once per test session."""
    root = tmp_path_factory.mktemp("ckpt")
    return {name: (str(root / name), make_checkpoint(str(root / name), name, seed=i)) for i, name in enumerate(SPECS)}
