"""`noregret logprobs` and greedy `noregret sample` against transformers on the same checkpoints
(on NOREGRET_TEST_DEVICE, the CPU by default; see conftest)."""
import json

import pytest
import torch

from checkpoints import SPECS
from conftest import DEVICE_ARGS, TOL, json_lines, noregret, reference_tokenizer


def hf_logprobs(model, seqs):
    out = []
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s], device=model.device)
            logp = model(ids).logits.float().log_softmax(-1)[0, :-1]
            out.append(logp.gather(1, ids[0, 1:, None])[:, 0].cpu())
    return out


@pytest.mark.parametrize("name", list(SPECS))
def test_logprobs_match_transformers(checkpoints, name):
    path, model = checkpoints[name]
    g = torch.Generator().manual_seed(7)
    vocab = model.config.vocab_size
    seqs = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in (96, 2, 64, 17)]
    proc = noregret("logprobs", "--model", path, *DEVICE_ARGS, stdin="".join(json.dumps({"tokens": s}) + "\n" for s in seqs))
    ours = json_lines(proc.stdout)
    assert len(ours) == len(seqs)
    for s, mine, ref in zip(seqs, ours, hf_logprobs(model, seqs)):
        assert len(mine["logprobs"]) == len(s) - 1
        err = (torch.tensor(mine["logprobs"]) - ref).abs().max().item()
        assert err < TOL, f"{name}: max abs error {err} on a sequence of {len(s)} tokens"
    # The logits must really discriminate (a degenerate model would make parity trivial).
    assert ref.std() > 0.5


@pytest.mark.parametrize("name", list(SPECS))
def test_greedy_sample_matches_generate(checkpoints, name):
    path, model = checkpoints[name]
    tok = reference_tokenizer(path)
    for prompt in ["12+35=", "the answer is", "x"]:
        ids = tok(prompt, return_tensors="pt").input_ids.to(model.device)
        with torch.no_grad():
            ref = model.generate(ids, do_sample=False, max_new_tokens=24)[0, ids.shape[1]:].tolist()
        out = json_lines(noregret("sample", "--model", path, *DEVICE_ARGS, "--prompt", prompt, "--temperature", "0",
                                  "--max-new-tokens", "24").stdout)
        assert len(out) == 1
        assert out[0]["tokens"] == ref, f"{name} {prompt!r}: {out[0]['tokens']} != {ref}"
        assert out[0]["text"] == tok.decode([t for t in ref if t != 2], skip_special_tokens=True)


@pytest.mark.parametrize("name", ["llama_gqa_llama3rope_old", "qwen3_headdim"])
def test_sampled_logprobs_are_model_logprobs(checkpoints, name):
    """At temperature 1 without truncation the behaviour log-prob of each sampled token is the
    model's log-prob, which the cache-free scoring path computes independently."""
    path, model = checkpoints[name]
    tok = reference_tokenizer(path)
    prompt = "12+35="
    ids = tok(prompt).input_ids
    samples = json_lines(noregret("sample", "--model", path, *DEVICE_ARGS, "--prompt", prompt, "-n", "6", "--seed", "3",
                                  "--max-new-tokens", "40").stdout)
    assert len({tuple(s["tokens"]) for s in samples}) > 1, "different streams should give different samples"
    seqs = [ids + s["tokens"] for s in samples]
    scored = hf_logprobs(model, seqs)
    for s, ref in zip(samples, scored):
        mine = torch.tensor(s["logprobs"])
        err = (mine - ref[len(ids) - 1:]).abs().max().item()
        assert err < TOL, f"behaviour log-probs differ from the model's by {err}"


def test_chat_prompt_matches_transformers(checkpoints):
    """`--chat` renders the model's chat template as transformers' apply_chat_template does."""
    path, model = checkpoints["qwen2_gqa"]
    tok = reference_tokenizer(path)
    messages = [{"role": "user", "content": " 2+2? "}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([tok(text, add_special_tokens=False).input_ids], device=model.device)
    with torch.no_grad():
        ref = model.generate(ids, do_sample=False, max_new_tokens=8)[0, ids.shape[1]:].tolist()
    out = json_lines(noregret("sample", "--model", path, *DEVICE_ARGS, "--prompt", " 2+2? ", "--chat", "--temperature", "0",
                              "--max-new-tokens", "8").stdout)[0]
    assert out["tokens"] == ref
