"""Tiny random Hugging Face checkpoints for the parity tests, made with transformers itself.

Each spec covers a feature the Rust loader must get right (GQA, tied/untied heads, llama3 rope
scaling, q/k/v biases, qwen3 q/k norms with head_dim != hidden/heads, both config spellings).
Weights get a wide spread so that logits differ clearly and greedy choices are never near-ties.
"""
import json
import os

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def byte_bpe_tokenizer() -> Tokenizer:
    """Byte-level BPE: specials, the 256 byte symbols, merges for digit pairs and a few words."""
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    merges = []
    pairs = [(a, b) for a in "0123456789" for b in "0123456789"] + [("t", "h"), ("th", "e"), ("Ġ", "the")]
    for a, b in pairs:
        merges.append((a, b))
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.add_special_tokens(SPECIALS)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return tok


CHAT_TEMPLATE = (
    "{% for m in messages %}<bos>{{ m['role'] }}: {{ m['content'] | trim }}\n{% endfor %}"
    "{% if add_generation_prompt %}<bos>assistant:{% endif %}"
)

SPECS = {
    # GQA, untied head, Llama 3 rope scaling, written in the older config spelling.
    "llama_gqa_llama3rope_old": dict(arch="llama", spelling="old", hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                                     tie_word_embeddings=False,
                                     rope={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                           "original_max_position_embeddings": 32}),
    # Tied head, MHA, attention and MLP biases, transformers 5 spelling.
    "llama_tied_bias_new": dict(arch="llama", spelling="new", hidden_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=4, intermediate_size=96,
                                tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
                                rope={"rope_type": "default", "rope_theta": 10000.0}),
    # q/k/v biases, GQA, untied.
    "qwen2_gqa": dict(arch="qwen2", spelling="old", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, tie_word_embeddings=False,
                      rope={"rope_type": "default", "rope_theta": 1000000.0}),
    # q/k norms, head_dim (24) != hidden / heads (16), tied, new spelling.
    "qwen3_headdim": dict(arch="qwen3", spelling="new", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=24, intermediate_size=128, tie_word_embeddings=True,
                          rope={"rope_type": "default", "rope_theta": 1000000.0}),
}


def spread_weights(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                base = 1.0 if "norm" in name else 0.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
        if not model.config.tie_word_embeddings:
            model.lm_head.weight.mul_(2.0)


def make_checkpoint(out: str, name: str, seed: int = 0):
    """Write checkpoint `name` into `out`; return the transformers model (eval mode)."""
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, Qwen2Config, Qwen3Config

    spec = dict(SPECS[name])
    arch, spelling, rope = spec.pop("arch"), spec.pop("spelling"), spec.pop("rope")
    os.makedirs(out, exist_ok=True)
    tok = byte_bpe_tokenizer()
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<bos>", "eos_token": "<eos>",
                   "pad_token": "<pad>", "unk_token": "<unk>", "chat_template": CHAT_TEMPLATE}, f)
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}[arch]
    config = cls(vocab_size=tok.get_vocab_size(), max_position_embeddings=256, rms_norm_eps=1e-6,
                 bos_token_id=1, eos_token_id=2, pad_token_id=0, rope_parameters=rope, **spec)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    spread_weights(model, seed)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model.save_pretrained(out)
    cpath = os.path.join(out, "config.json")
    with open(cpath) as f:
        cj = json.load(f)
    if spelling == "old":
        # Published checkpoints' spelling: flat rope_theta, rope_scaling, torch_dtype.
        params = cj.pop("rope_parameters", None) or rope
        cj["rope_theta"] = params["rope_theta"]
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
        cj["rope_scaling"] = None if scaling.get("rope_type") == "default" else scaling
        cj["torch_dtype"] = cj.pop("dtype", "float32")
    else:
        assert "rope_parameters" in cj and "rope_theta" not in cj, cj
    with open(cpath, "w") as f:
        json.dump(cj, f, indent=2)
    return model
