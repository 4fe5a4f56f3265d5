"""LoRA adapters against peft: adapters made by peft load here, adapters made here load in peft,
and a merged export loads in transformers, all to 1e-4 in log-probs (on NOREGRET_TEST_DEVICE, the CPU by
default; see conftest for the GPU tolerance)."""
import json
import os

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from conftest import DEVICE, DEVICE_ARGS, TOL, json_lines, noregret, reference_tokenizer


def sequences(vocab, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in (80, 2, 33)]


def ours(path, seqs, adapter=None):
    args = ["logprobs", "--model", path, *DEVICE_ARGS] + (["--adapter", adapter] if adapter else [])
    out = json_lines(noregret(*args, stdin="".join(json.dumps({"tokens": s}) + "\n" for s in seqs)).stdout)
    return [torch.tensor(o["logprobs"]) for o in out]


def reference(model, seqs):
    out = []
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s], device=model.device)
            logp = model(input_ids=ids).logits.float().log_softmax(-1)[0, :-1]
            out.append(logp.gather(1, ids[0, 1:, None])[:, 0].cpu())
    return out


def max_err(a, b):
    return max((x - y).abs().max().item() if len(x) else 0.0 for x, y in zip(a, b))


def fresh_base(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(DEVICE).eval()


def peft_adapter(path, targets, rank, seed, out):
    """A peft LoRA on `targets` with random non-zero A and B (so it changes the model), saved to `out`."""
    model = get_peft_model(fresh_base(path), LoraConfig(r=rank, lora_alpha=32, lora_dropout=0.0, target_modules=targets))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    model.eval()
    model.save_pretrained(out)
    return model


@pytest.mark.parametrize("name", ["llama_gqa_llama3rope_old", "qwen3_headdim", "qwen2_gqa"])
@pytest.mark.parametrize("rank", [1, 4])
def test_peft_adapter_loads_here(checkpoints, tmp_path, name, rank):
    path, _ = checkpoints[name]
    adapter_dir = str(tmp_path / "adapter")
    model = peft_adapter(path, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                         rank, seed=rank, out=adapter_dir)
    seqs = sequences(model.config.vocab_size)
    ref = reference(model, seqs)
    base = reference(fresh_base(path), seqs)
    assert max_err(ref, base) > 0.05, "the adapter must really change the model"
    assert max_err(ours(path, seqs, adapter_dir), ref) < TOL


@pytest.mark.parametrize("name", ["llama_gqa_llama3rope_old", "qwen2_gqa"])
def test_greedy_sample_with_adapter_matches_peft_generate(checkpoints, tmp_path, name):
    """`sample --adapter` decodes with the adapter: greedy tokens equal peft's greedy generate."""
    path, _ = checkpoints[name]
    adapter_dir = str(tmp_path / "adapter")
    model = peft_adapter(path, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                         2, seed=7, out=adapter_dir)
    base = fresh_base(path)
    tok = reference_tokenizer(path)
    changed = False
    for prompt in ["12+35=", "the answer is", "x"]:
        ids = tok(prompt, return_tensors="pt").input_ids.to(DEVICE)
        with torch.no_grad():
            ref = model.generate(input_ids=ids, do_sample=False, max_new_tokens=16)[0, ids.shape[1]:].tolist()
            plain = base.generate(input_ids=ids, do_sample=False, max_new_tokens=16)[0, ids.shape[1]:].tolist()
        changed |= ref != plain
        out = json_lines(noregret("sample", "--model", path, *DEVICE_ARGS, "--adapter", adapter_dir, "--prompt", prompt,
                                  "--temperature", "0", "--max-new-tokens", "16").stdout)
        assert out[0]["tokens"] == ref, f"{name} {prompt!r}: {out[0]['tokens']} != {ref}"
    assert changed, "the adapter must change some greedy continuation"


@pytest.mark.parametrize("name", ["llama_tied_bias_new", "qwen3_headdim"])
def test_adapter_saved_here_loads_in_peft(checkpoints, tmp_path, name):
    path, _ = checkpoints[name]
    adapter_dir = str(tmp_path / "ours")
    noregret("adapter", "init", "--model", path, "--rank", "2", "--targets", "all", "--random-b", "0.05",
             "--seed", "5", "--out", adapter_dir)
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 2 and cfg["lora_alpha"] == 32
    peft_model = PeftModel.from_pretrained(fresh_base(path), adapter_dir).eval()
    seqs = sequences(peft_model.config.vocab_size, seed=9)
    ref = reference(peft_model, seqs)
    assert max_err(ref, reference(fresh_base(path), seqs)) > 0.05
    assert max_err(ours(path, seqs, adapter_dir), ref) < TOL


@pytest.mark.parametrize("name", ["llama_gqa_llama3rope_old", "qwen2_gqa"])
def test_merged_export_loads_in_transformers(checkpoints, tmp_path, name):
    path, _ = checkpoints[name]
    adapter_dir, merged = str(tmp_path / "adapter"), str(tmp_path / "merged")
    noregret("adapter", "init", "--model", path, "--rank", "4", "--random-b", "0.05", "--seed", "2", "--out", adapter_dir)
    noregret("export", "--model", path, "--adapter", adapter_dir, "--merge", "--out", merged)
    assert os.path.exists(os.path.join(merged, "tokenizer.json"))
    seqs = sequences(363, seed=4)
    merged_ref = reference(fresh_base(merged), seqs)
    peft_ref = reference(PeftModel.from_pretrained(fresh_base(path), adapter_dir).eval(), seqs)
    assert max_err(merged_ref, reference(fresh_base(path), seqs)) > 0.05, "the adapter must really change the model"
    assert max_err(merged_ref, peft_ref) < TOL
    assert max_err(ours(path, seqs, adapter_dir), merged_ref) < TOL


def test_lm_head_adapter_round_trip(checkpoints, tmp_path):
    path, _ = checkpoints["qwen2_gqa"]
    adapter_dir = str(tmp_path / "head")
    noregret("adapter", "init", "--model", path, "--rank", "1", "--targets", "q_proj,down_proj,lm_head",
             "--random-b", "0.05", "--out", adapter_dir)
    peft_model = PeftModel.from_pretrained(fresh_base(path), adapter_dir).eval()
    seqs = sequences(peft_model.config.vocab_size, seed=12)
    assert max_err(ours(path, seqs, adapter_dir), reference(peft_model, seqs)) < TOL


def test_embedding_adapter_both_ways(checkpoints, tmp_path):
    path, _ = checkpoints["llama_gqa_llama3rope_old"]
    peft_dir = str(tmp_path / "peft")
    model = peft_adapter(path, ["embed_tokens", "v_proj", "lm_head"], 2, seed=11, out=peft_dir)
    seqs = sequences(model.config.vocab_size, seed=21)
    ref = reference(model, seqs)
    assert max_err(ref, reference(fresh_base(path), seqs)) > 0.05
    assert max_err(ours(path, seqs, peft_dir), ref) < TOL
    ours_dir = str(tmp_path / "ours")
    noregret("adapter", "init", "--model", path, "--rank", "1", "--targets", "embed_tokens,o_proj", "--random-b", "0.05",
             "--out", ours_dir)
    loaded = PeftModel.from_pretrained(fresh_base(path), ours_dir).eval()
    assert max_err(ours(path, seqs, ours_dir), reference(loaded, seqs)) < TOL
