"""The Python peers noregret's benchmarks are compared against, measured in the same run.

  peer.py ceiling                      float32 matmul GFLOP/s (the machine's ceiling)
  peer.py generate --model DIR ...     HF generate tokens/s (KV cache, pure sampling, exactly T new tokens)
  peer.py train-step --model DIR ...   one policy-gradient step (forward, backward, AdamW) with peft LoRA or full FT
  peer.py grpo --model DIR ...         TRL's GRPOTrainer with a peft LoRA: seconds per RL step (sample, score, learn)

Each prints one JSON line per configuration. Timings are medians after a warm-up.
"""
import argparse
import json
import resource
import statistics
import time

import torch


def median_time(fn, runs: int, warmup: int = 1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def ceiling_gflops(runs: int):
    """float32 `mm` GFLOP/s on square 1024 and 2048 matrices: {n: GFLOP/s}."""
    out = {}
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        med, _ = median_time(lambda: torch.mm(a, b), runs, warmup=2)
        out[n] = 2 * n ** 3 / med / 1e9
    return out


def ceiling(args):
    for n, gflops in ceiling_gflops(args.runs).items():
        print(json.dumps({"bench": "ceiling", "n": n, "gflops": gflops, "threads": torch.get_num_threads()}))


def load(path):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def with_lora(model, rank: int):
    """peft LoRA on every linear layer of the blocks, B random so the adapter math really runs."""
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def generate(args):
    model = load(args.model)
    if args.lora_rank:
        model = with_lora(model, args.lora_rank)
    vocab = model.config.vocab_size
    for b in args.batch:
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(4, vocab, (b, args.prompt_len), generator=g)
        mask = torch.ones_like(ids)

        def run():
            with torch.no_grad():
                model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                               max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=0)

        med, times = median_time(run, args.runs)
        print(json.dumps({"bench": "generate", "impl": "hf", "batch": b, "prompt_len": args.prompt_len,
                          "new_tokens": args.new_tokens, "lora_rank": args.lora_rank, "median_s": med, "times_s": times,
                          "tok_per_s": b * args.new_tokens / med, "threads": torch.get_num_threads()}), flush=True)


def train_step(args):
    model = load(args.model).train()
    if args.lora_rank:
        model = with_lora(model, args.lora_rank)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(4, vocab, (args.batch, args.seq_len), generator=g)
    adv = torch.randn(args.batch, generator=g)

    def step():
        logits = model(input_ids=ids).logits[:, :-1]
        logp = logits.float().log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
        loss = -(adv[:, None] * logp).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    med, times = median_time(step, args.runs, warmup=2)
    print(json.dumps({"bench": "train_step", "impl": "hf+peft" if args.lora_rank else "hf", "batch": args.batch,
                      "seq_len": args.seq_len, "lora_rank": args.lora_rank, "median_s": med, "times_s": times,
                      "tok_per_s": args.batch * args.seq_len / med, "trainable": sum(p.numel() for p in params),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "threads": torch.get_num_threads()}), flush=True)


def grpo(args):
    """TRL GRPOTrainer, every step = sample `batch` completions (`batch / group` prompts x `group`),
    exact-match reward, one AdamW step on a peft LoRA (rank 2, alpha 32, all linear layers).
    Settings as `noregret bench rl-step`: temperature 1, no reference model (beta 0), one
    iteration per batch, no gradient checkpointing. Prompts are "a+b=" with a, b in 1..999."""
    import random
    import tempfile

    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PreTrainedTokenizerFast, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    rng = random.Random(0)
    pairs = [(rng.randint(1, 999), rng.randint(1, 999)) for _ in range(args.steps * args.batch)]
    data = Dataset.from_dict({"prompt": [f"{a}+{b}=" for a, b in pairs], "answer": [str(a + b) for a, b in pairs]})

    def exact(completions, answer, **_):
        return [1.0 if (c.split() or [""])[0] == a else 0.0 for c, a in zip(completions, answer)]

    class Timer(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_begin(self, *_, **__):
            self.t0 = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter() - self.t0)

    tok = PreTrainedTokenizerFast(tokenizer_file=f"{args.model}/tokenizer.json", bos_token="<bos>", eos_token="<eos>",
                                  pad_token="<pad>")
    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(output_dir=out, use_cpu=True, bf16=False, fp16=False, seed=0, max_steps=args.steps,
                         per_device_train_batch_size=args.batch, num_generations=args.group, gradient_accumulation_steps=1,
                         num_iterations=1, max_completion_length=args.new_tokens, temperature=1.0, top_k=0, top_p=1.0,
                         beta=0.0, learning_rate=1e-5, gradient_checkpointing=False, logging_steps=1, save_strategy="no",
                         report_to="none", disable_tqdm=True, dataloader_num_workers=0)
        lora = LoraConfig(r=2, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
        trainer = GRPOTrainer(model=load(args.model).train(), reward_funcs=exact, args=cfg, train_dataset=data,
                              processing_class=tok, peft_config=lora, callbacks=[timer])
        trainer.train()
    steady = timer.times[1:] or timer.times
    print(json.dumps({"bench": "rl_step", "impl": "trl", "model": args.model, "batch": args.batch, "group": args.group,
                      "new_tokens": args.new_tokens, "steps": args.steps, "s_per_step": statistics.median(steady),
                      "step_times_s": [round(t, 4) for t in timer.times], "threads": torch.get_num_threads()}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("ceiling")
    c.add_argument("--runs", type=int, default=5)
    gp = sub.add_parser("generate")
    gp.add_argument("--model", required=True)
    gp.add_argument("--batch", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64])
    gp.add_argument("--prompt-len", type=int, default=32)
    gp.add_argument("--new-tokens", type=int, default=64)
    gp.add_argument("--lora-rank", type=int, default=0)
    gp.add_argument("--runs", type=int, default=5)
    tp = sub.add_parser("train-step")
    tp.add_argument("--model", required=True)
    tp.add_argument("--batch", type=int, default=16)
    tp.add_argument("--seq-len", type=int, default=96)
    tp.add_argument("--lora-rank", type=int, default=2)
    tp.add_argument("--runs", type=int, default=5)
    rp = sub.add_parser("grpo")
    rp.add_argument("--model", required=True)
    rp.add_argument("--steps", type=int, default=6)
    rp.add_argument("--batch", type=int, default=16)
    rp.add_argument("--group", type=int, default=8)
    rp.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    {"ceiling": ceiling, "generate": generate, "train-step": train_step, "grpo": grpo}[args.cmd](args)


if __name__ == "__main__":
    main()
