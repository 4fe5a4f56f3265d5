"""Random Llama checkpoints of the benchmark presets, in Hugging Face format (made with transformers).

Shapes follow the peer benchmark's presets so figures compare: tiny (hidden 128, 4 layers, 4/2 heads,
ffn 384) and small (hidden 512, 8 layers, 8/4 heads, ffn 1536), untied head, float32.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from checkpoints import byte_bpe_tokenizer  # noqa: E402

PRESETS = {
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=384),
    "small": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4, intermediate_size=1536),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig

    os.makedirs(args.out, exist_ok=True)
    tok = byte_bpe_tokenizer()
    tok.save(os.path.join(args.out, "tokenizer.json"))
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=2048, rms_norm_eps=1e-6,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **PRESETS[args.preset])
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model.save_pretrained(args.out)


if __name__ == "__main__":
    main()
