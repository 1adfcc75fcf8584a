"""One paper-shaped RL step on a GPU: rollout tokens/s, training tokens/s, MFU, peak memory.

    python -m bench.bench_gpu_step                                # CUDA, Qwen2.5-1.5B shape, bf16
    python -m bench.bench_gpu_step --device cpu --preset cpu-small --prompts 2 --group 2 \\
        --prompt-len 16 --gen-len 16 --minibatch 4                 # a smoke run anywhere

The model is Qwen2.5-1.5B's architecture with random weights (nothing downloaded). The work is
SPEC section 5's batch: a rollout of P·G = 128 trajectories (16 prompts × 8 samples), then
updates on mini-batches of 32 — plain SGD, gradient checkpointing, the chunked log-probs of
``llm.update.logprobs`` and GRPO's loss from ``ticgrpo``. Random weights emit EOS at random, so sampling
is forced to exactly ``--gen-len`` new tokens (``min_new_tokens``) to make the work fixed.

Reported: rollout tokens/s (new tokens / wall time of ``generate``), training tokens/s (B·S per
optimizer step / its wall time), model FLOPs utilisation of the training step
(``6·P_matmul·tokens + 6·layers·hidden·S·tokens`` for causal attention, over
``--peak-tflops``; recomputation from checkpointing is not counted as useful work), and peak
memory (``torch.cuda.max_memory_allocated``) of each phase. Writes bench/results/gpu_step_*.json.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from bench._common import peak_memory, print_table, timed, write_json

#: Dense bf16 peak (no sparsity), TFLOP/s, by device-name fragment.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "4090": 165.2}


def build(preset: str, device: torch.device, dtype: torch.dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from bench.bench_logprobs import PRESETS, QWEN_VOCAB

    cfg = Qwen2Config(vocab_size=QWEN_VOCAB, max_position_embeddings=32768, **PRESETS[preset])
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(dtype)
    model.generation_config.pad_token_id = 0
    return model


def matmul_params(model) -> int:
    """Parameters that take part in a matmul per token: all but the input embedding (tied or not,
    the lm_head projection is one)."""
    emb = model.get_input_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    tied = model.lm_head.weight is emb
    return total - emb.numel() + (emb.numel() if tied else 0)


def train_flops(model, batch: int, seq: int) -> float:
    """Model FLOPs of forward + backward on [batch, seq] (causal attention: half the S² terms)."""
    cfg = model.config
    tokens = batch * seq
    dense = 6 * matmul_params(model) * tokens
    attention = 6 * cfg.num_hidden_layers * cfg.hidden_size * seq * tokens  # 12·L·d·S / 2
    return float(dense + attention)


def rollout(model, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    n = args.prompts * args.group
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(1, 1000, (args.prompts, args.prompt_len), generator=gen)
    ids = prompts.repeat_interleave(args.group, dim=0).to(device)  # [N, S_prompt]
    attn = torch.ones_like(ids)
    model.eval()
    kw = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, use_cache=True)
    kw.update(max_new_tokens=args.gen_len, min_new_tokens=args.gen_len)
    if args.static_cache:
        kw["cache_implementation"] = "static"

    def run():
        with torch.no_grad():
            return model.generate(input_ids=ids, attention_mask=attn, **kw)

    run_small = dict(kw, max_new_tokens=4, min_new_tokens=4)
    with torch.no_grad():  # warm-up: kernels, allocator, (static cache) compilation
        model.generate(input_ids=ids, attention_mask=attn, **run_small)
    peak, _ = peak_memory(run, device)
    wall, _, out = timed(run, device)
    new_tokens = n * (out.shape[1] - ids.shape[1])
    return {
        "rollout/sequences": n,
        "rollout/new_tokens": new_tokens,
        "rollout/s": wall,
        "rollout/tokens_per_s": new_tokens / wall,
        "rollout/peak_mb": peak / 2**20,
        "sequences": out,
    }


def train_steps(model, seqs: torch.Tensor, args: argparse.Namespace, device) -> dict[str, Any]:
    from llm.update.logprobs import token_logprobs
    from ticgrpo import group_advantages, policy_loss

    model.train()
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    model.config.use_cache = False
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)
    n, seq = seqs.shape
    resp = seq - args.prompt_len
    attn = torch.ones_like(seqs)
    rewards = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(1)).float()
    adv = group_advantages(rewards, args.group).to(device)
    mask = torch.ones(n, resp, dtype=torch.bool, device=device)
    with torch.no_grad():
        old = torch.cat(
            [
                token_logprobs(model, seqs[i : i + args.minibatch], attn[i : i + args.minibatch],
                               logits_to_keep=resp, chunk_size=args.chunk_size).logp
                for i in range(0, n, args.minibatch)
            ]
        )  # fmt: skip

    def step(i: int) -> None:
        sl = slice(i, i + args.minibatch)
        logp = token_logprobs(
            model, seqs[sl], attn[sl], logits_to_keep=resp, chunk_size=args.chunk_size
        ).logp
        loss = policy_loss(logp, old[sl], adv[sl], mask[sl], method="grpo").loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    starts = list(range(0, n, args.minibatch))
    step(starts[0])  # warm-up
    peak, _ = peak_memory(lambda: step(starts[1 % len(starts)]), device)
    times = [timed(lambda i=i: step(i), device)[0] for i in starts]
    t = statistics.median(times)
    tokens = args.minibatch * seq
    flops = train_flops(model, args.minibatch, seq)
    out = {
        "train/minibatch": args.minibatch,
        "train/seq_len": seq,
        "train/step_s": t,
        "train/tokens_per_s": tokens / t,
        "train/model_tflops_per_s": flops / t / 1e12,
        "train/peak_mb": peak / 2**20,
    }
    if args.peak_tflops:
        out["train/mfu"] = flops / t / 1e12 / args.peak_tflops
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="qwen2.5-1.5b")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--gen-len", type=int, default=1024)
    p.add_argument("--minibatch", type=int, default=32)
    p.add_argument("--chunk-size", type=int, default=4096)
    p.add_argument("--static-cache", action="store_true", help="generate with a static KV cache")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU")
    p.add_argument("--out-name", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and args.peak_tflops is None:
        name = torch.cuda.get_device_name(device)
        args.peak_tflops = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build(args.preset, device, dtype)
    result = rollout(model, args, device)
    seqs = result.pop("sequences")
    result.update(train_steps(model, seqs, args, device))
    rows = [{"metric": k, "value": v} for k, v in result.items()]
    print_table(rows, ["metric", "value"])
    name = args.out_name or f"gpu_step_{device.type}_{args.preset}"
    print(f"wrote {write_json(name, {'args': vars(args), 'result': result})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
