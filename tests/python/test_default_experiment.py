"""The default experiment against transformers and peft, and the GSM8K recipe's config.

- The committed base model (models/arith-base) loads in transformers, and greedy `generate` there
  gives noregret's greedy tokens on held-out problems.
- A tiny-budget RL run of configs/arith.toml writes a PEFT adapter; peft's greedy decoding with it
  scores the same held-out accuracy as `noregret eval --adapter` (within 2 points).
- configs/gsm8k-qwen3.toml resolves (`--dry-run`) to the documented recipe, and the same file
  trains on a tiny Qwen3 checkpoint on the CPU (model overridden), so the data, template, reward
  and staleness settings are exercised end to end, not only parsed.

Always on the CPU (the base model is float32; NOREGRET_TEST_DEVICE does not apply here).
"""
import json
import os
import subprocess
import sys
import tomllib
from collections import defaultdict

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from conftest import ROOT, json_lines, noregret, reference_tokenizer

BASE = os.path.join(ROOT, "models", "arith-base")
ARITH = os.path.join(ROOT, "configs", "arith.toml")
GSM8K = os.path.join(ROOT, "configs", "gsm8k-qwen3.toml")
EOS = 2
# Held-out problems for the peft comparison: enough that 2 points is ~5 problems.
PROBLEMS = 250
RL_STEPS = 30


def load_base():
    return AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32).eval()


def greedy_tokens(model, tok, prompts, max_new_tokens):
    """Greedy `generate` per prompt: new tokens up to and including the first eos. Prompts of the same
    length go in one batch, so no padding enters the computation."""
    by_len = defaultdict(list)
    for i, p in enumerate(prompts):
        by_len[len(tok(p).input_ids)].append(i)
    out = [None] * len(prompts)
    with torch.no_grad():
        for idx in by_len.values():
            ids = torch.tensor([tok(prompts[i]).input_ids for i in idx])
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=max_new_tokens, eos_token_id=EOS, pad_token_id=0)
            for row, i in enumerate(idx):
                new = gen[row, ids.shape[1]:].tolist()
                out[i] = new[:new.index(EOS) + 1] if EOS in new else new
    return out


def exact_match(response, gold):
    return response.strip() == gold.strip()


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """The first PROBLEMS held-out problems of configs/arith.toml with the base model's greedy results."""
    path = tmp_path_factory.mktemp("heldout") / "base.jsonl"
    summary = json.loads(noregret("eval", "--model", BASE, "--env", ARITH, "--problems", str(PROBLEMS),
                                  "--samples", "0", "--out", str(path)).stdout)
    rows = json_lines(path.read_text())
    assert summary["problems"] == len(rows) == PROBLEMS
    return summary, rows


@pytest.fixture(scope="module")
def rl_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rl") / "run"
    noregret("train", ARITH, "--set", f"model.path={BASE}", "--set", f"rl.steps={RL_STEPS}", "--set", "eval.every=0",
             "--set", "eval.samples=0", "--set", f"run.out={out}", "--set", "run.checkpoint_every=0", timeout=600)
    return out


def test_base_model_greedy_matches_transformers(heldout, tmp_path):
    _, rows = heldout
    rows = rows[:50]
    prompts = [r["prompt"] for r in rows]
    # The arith template is the question alone; the char tokenizer adds <bos> (as noregret does).
    assert all(p.endswith("=") and "\n" not in p for p in prompts), prompts[:3]
    tok = reference_tokenizer(BASE)
    assert tok(prompts[0]).input_ids[0] == 1 and tok.decode(tok(prompts[0]).input_ids[1:]) == prompts[0]
    max_new = tomllib.load(open(ARITH, "rb"))["rollout"]["max_new_tokens"]  # what `eval` below decodes with
    ref = greedy_tokens(load_base(), tok, prompts, max_new)
    file = tmp_path / "prompts.jsonl"
    file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    ours = json_lines(noregret("sample", "--model", BASE, "--prompts", str(file), "--temperature", "0",
                               "--max-new-tokens", str(max_new)).stdout)
    assert len(ours) == len(prompts)
    mismatched = [(p, o["tokens"], r) for p, o, r in zip(prompts, ours, ref) if o["tokens"] != r]
    assert not mismatched, f"{len(mismatched)} of {len(prompts)} differ, e.g. {mismatched[:3]}"
    # `eval` (the rollout engine) answers as `sample` does.
    for o, r in zip(ours, rows):
        assert o["text"] == r["response"], (r["prompt"], o["text"], r["response"])
    # It is the trained base model: it answers some problems right and not all the same way.
    right = sum(exact_match(tok.decode(t, skip_special_tokens=True), r["gold"]) for t, r in zip(ref, rows))
    assert right >= 10, f"only {right}/50 right: not the trained base model?"
    assert len({tuple(t) for t in ref}) > 25


def test_rl_adapter_in_peft_matches_noregret_eval(heldout, rl_run, tmp_path):
    base_summary, base_rows = heldout
    adapter = rl_run / "adapter"
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    summary = json.loads((rl_run / "summary.json").read_text())
    assert summary["steps"] == RL_STEPS

    out = tmp_path / "adapter_eval.jsonl"
    ours = json.loads(noregret("eval", "--model", BASE, "--adapter", str(adapter), "--env", ARITH, "--problems",
                               str(PROBLEMS), "--samples", "0", "--out", str(out)).stdout)
    rows = json_lines(out.read_text())
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in base_rows], "not the same held-out problems"

    max_new = tomllib.load(open(ARITH, "rb"))["rollout"]["max_new_tokens"]
    tok = reference_tokenizer(BASE)
    model = PeftModel.from_pretrained(load_base(), str(adapter)).eval()
    tokens = greedy_tokens(model, tok, [r["prompt"] for r in rows], max_new)
    texts = [tok.decode(t, skip_special_tokens=True) for t in tokens]
    peft_acc = sum(exact_match(t, r["gold"]) for t, r in zip(texts, rows)) / len(rows)

    changed = sum(t != b["response"] for t, b in zip(texts, base_rows))
    same_as_ours = sum(t == r["response"] for t, r in zip(texts, rows))
    print(f"\nheld-out greedy accuracy on {len(rows)} problems: base {base_summary['greedy_accuracy']:.3f}, "
          f"after {RL_STEPS} RL steps: peft {peft_acc:.3f}, noregret eval {ours['greedy_accuracy']:.3f}; "
          f"peft's answer equals noregret's on {same_as_ours}, differs from the base model's on {changed}")
    # The adapter must matter, or agreeing with noregret would prove nothing about loading it.
    assert changed >= 5, f"the adapter changes only {changed} greedy answers"
    assert abs(peft_acc - ours["greedy_accuracy"]) <= 0.02, (peft_acc, ours["greedy_accuracy"])
    # Stricter than the accuracies: the answers themselves agree (a float32 near-tie may flip a few).
    assert same_as_ours >= 0.98 * len(rows), f"peft and noregret answer alike on only {same_as_ours}/{len(rows)}"


def dry_run(*overrides):
    proc = noregret("train", GSM8K, "--dry-run", *[a for o in overrides for a in ("--set", o)], cwd=ROOT)
    return tomllib.loads(proc.stdout)


def test_gsm8k_recipe_dry_run():
    cfg = dry_run()
    assert cfg["model"]["device"] == "cuda" and cfg["model"]["dtype"] == "bfloat16"
    assert os.path.basename(cfg["model"]["path"]) == "Qwen3-0.6B"
    assert cfg["adapter"]["rank"] == 1 and cfg["adapter"]["alpha"] == 32 and cfg["adapter"]["targets"] == "all"
    rl = cfg["rl"]
    assert rl["lr"] == pytest.approx(1e-4) and rl["warmup_steps"] == 0 and rl["loss"] == "importance_sampling"
    r = cfg["rollout"]
    assert r["group_size"] == 8 and r["groups_per_step"] > 1 and r["max_new_tokens"] == 512
    assert r["max_staleness"] == 1
    assert [t["kind"] for t in cfg["reward"]] == ["math"]
    problems = cfg["env"]["problems"]
    assert problems["source"] == "jsonl" and problems["answer_format"] == "gsm8k"
    assert os.path.samefile(problems["train"], os.path.join(ROOT, "envs", "data", "gsm8k_sample.jsonl"))
    assert "\\boxed{{}}" in cfg["env"]["template"]["chat"]["user"]
    # The documented overrides land where the comments say.
    cfg = dry_run("model.path=/data/Qwen2.5-1.5B-Instruct", "adapter.rank=4", "env.problems.test=x/test.jsonl")
    assert cfg["model"]["path"] == "/data/Qwen2.5-1.5B-Instruct" and cfg["adapter"]["rank"] == 4
    assert cfg["env"]["problems"]["test"].endswith("x/test.jsonl")


def test_gsm8k_recipe_trains_on_a_tiny_qwen3(checkpoints, tmp_path):
    """The recipe as written, on a tiny random Qwen3 on the CPU: only the model, its device and dtype
    and the budgets change. The JSONL sample feeds the prompts through the model's chat template, the
    math reward scores them, and the run ends with a rank-1 all-linear PEFT adapter."""
    path, _ = checkpoints["qwen3_headdim"]
    small = ["model.device=cpu", "model.dtype=float32", "rl.steps=2", "rollout.groups_per_step=2",
             "rollout.max_new_tokens=8", "eval.every=0", "run.samples_every=1"]
    args = [a for o in small for a in ("--set", o)]
    out = tmp_path / "run"
    proc = noregret("train", GSM8K, "--set", f"model.path={path}", "--set", f"run.out={out}", *args, cwd=ROOT)
    summary = json.loads(proc.stdout)
    assert summary["steps"] == 2 and summary["heldout_accuracy_start"] is not None
    with open(out / "adapter" / "adapter_config.json") as f:
        adapter = json.load(f)
    assert adapter["r"] == 1 and adapter["lora_alpha"] == 32
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    # Transcripts show the prompt's messages (system, then the user template filled with a question of
    # the sample file) and that problem's gold answer, the number after its "####" (without commas).
    chat = tomllib.load(open(GSM8K, "rb"))["env"]["template"]["chat"]
    data = {p["question"]: p["answer"] for p in json_lines(open(os.path.join(ROOT, "envs", "data", "gsm8k_sample.jsonl")).read())}
    transcripts = json_lines((out / "samples.jsonl").read_text())
    assert transcripts
    for t in transcripts:
        user = chat["user"].replace("{{}}", "{}")
        question = next(q for q in data if t["prompt"] == chat["system"] + "\n\n" + user.replace("{question}", q))
        assert t["gold"] == data[question].rsplit("####", 1)[1].strip().replace(",", "")  # "14,400" -> "14400"
    # The chat template really is used: the same recipe on a model without one stops with that reason.
    proc = noregret("train", GSM8K, "--set", f"model.path={BASE}", "--set", f"run.out={tmp_path / 'no-template'}", *args,
                    cwd=ROOT, check=False)
    assert proc.returncode == 1 and "no chat template" in proc.stderr, proc.stderr


def test_gpu_check_without_cuda_says_so():
    """`make gpu-check` on a machine without CUDA: one JSON line saying so, exit status 0."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check.py")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert result["cuda"] is False and "reason" in result


def test_gpu_check_script_on_the_cpu():
    """The GPU path of bench/gpu_check.py, run on the CPU with a small budget: one parity test through
    pytest's report, a 2-step run of the default experiment, and one JSON line that counts them."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"), "--device", "cpu", "--steps", "2",
                           "--tests", "tests/python/test_parity.py::test_chat_prompt_matches_transformers"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert result["ok"] is True and result["device"] == "cpu"
    assert result["parity"]["passed"] == 1 and result["parity"]["failed"] == 0 and result["parity"]["errors"] == 0
    run = result["run"]
    assert run["steps"] == 2 and 0 < run["seconds_per_step"] < 60
    assert 0 < run["heldout_accuracy_start"] < 1 and 0 < run["heldout_accuracy_end"] < 1
