"""Padding in the training forward pass: padded vs length-sorted micro-batches vs packed rows.

    python -m bench.bench_padding                       # CPU, the 8.7 M-parameter bench model
    python -m bench.bench_padding --device cuda --dtype bfloat16 --hidden 1536 --layers 28 \\
        --heads 12 --kv-heads 2 --rows 128 --prompt-len 256 --max-completion 1024 \\
        --budgets 16384 32768                           # a Qwen2.5-1.5B-shaped GPU run

The work: forward + backward of ``Σ log π(completion tokens)`` over one rollout of ``--rows``
sequences (a Qwen2 model with random weights; prompt lengths uniform in ``[prompt_len/2,
prompt_len]``, completion lengths uniform in ``[1, max_completion]``, seeded). Layouts:

- ``padded``: one batch of all rows, each padded to the longest prompt and completion
  (``llm.update.batching.collate``, what a trainer without any padding handling does);
- ``rows:k``: fixed micro-batches of ``k`` rows in rollout order (``microbatch_size``);
- ``sorted:B``: length-sorted micro-batches of at most ``B`` padded tokens
  (``llm.update.batching.microbatches``, the trainer's ``microbatch_tokens=B``);
- ``packed:B``: sequences concatenated into rows of at most ``B`` real tokens, positions
  restarting at 0 for each (transformers then masks attention block-diagonally: with ``sdpa`` or
  ``eager`` through a 4D mask over the whole packed row, with ``flash_attention_2`` through
  variable-length kernels). Not in the trainer: this script measures whether it would pay.

All layouts score the same tokens with the same chunked head (``llm.update.logprobs``); the script checks
that every layout's log-probs equal the padded ones (``max |Δ logp|``). Reported per layout:
process CPU seconds and wall seconds (median of ``--repeats``), tokens laid out (real +
padding; packed rows also pay attention over their whole length), peak memory
(``bench._common.peak_memory``). Results: bench/results/padding_<device>.json.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from bench._common import peak_memory, print_table, timed, write_json


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The device, dtype and shape options ``build_model`` reads (the 8.7 M bench model by
    default)."""
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--attn", default="sdpa", help="sdpa | eager | flash_attention_2")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=1)
    p.add_argument("--vocab", type=int, default=200)


def build_model(args: argparse.Namespace, device: torch.device, dtype: torch.dtype):
    """A Qwen2 with random weights and the requested shape (nothing downloaded)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, max_position_embeddings=max(4096, 2 * args.budgets[-1]),
        tie_word_embeddings=True,
    )  # fmt: skip
    cfg._attn_implementation = args.attn
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(dtype)
    return model.train()


def make_rollout(args: argparse.Namespace):
    """An ``Experience``-like rollout with seeded prompt and completion lengths."""
    from llm.rollout.experience import Experience
    from llm.rollout.sampling import Generation

    gen = torch.Generator().manual_seed(args.seed)
    lo = max(1, args.prompt_len // 2)

    def draw(a: int, b: int) -> int:
        return int(torch.randint(a, b + 1, (1,), generator=gen))

    prompts = [torch.randint(1, args.vocab, (draw(lo, args.prompt_len),), generator=gen).tolist()
               for _ in range(args.rows)]  # fmt: skip
    comps = [torch.randint(1, args.vocab, (draw(1, args.max_completion),), generator=gen).tolist()
             for _ in range(args.rows)]  # fmt: skip
    n = args.rows
    return Experience(
        prompts=[""] * n, answers=[""] * n,
        gen=Generation(prompts, comps, [""] * n, [False] * n),
        rewards=torch.zeros(n), raw_rewards=torch.zeros(n), group_size=1,
    )  # fmt: skip


def pack(exp, budget: int) -> list[list[int]]:
    """Rows of the rollout, in order, greedily grouped into packs of at most ``budget`` real
    tokens (a longer sequence goes alone)."""
    packs, cur, used = [], [], 0
    for i in range(len(exp)):
        size = len(exp.gen.prompt_ids[i]) + len(exp.gen.completion_ids[i])
        if cur and used + size > budget:
            packs.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += size
    return packs + [cur] if cur else packs


def packed_logprobs(model, exp, rows: list[int], device) -> tuple[torch.Tensor, int]:
    """Log-probs ``[M]`` of the completion tokens of ``rows`` (in row order) from ONE packed row
    ``[1, Σ (prompt + completion)]``; also the packed length."""
    from llm.update.logprobs import chunked_head_logprobs

    ids, pos, where, targets = [], [], [], []
    for i in rows:
        p, c = exp.gen.prompt_ids[i], exp.gen.completion_ids[i]
        start = len(ids)
        ids += p + c
        pos += list(range(len(p) + len(c)))
        where += range(start + len(p) - 1, start + len(p) + len(c) - 1)  # predicting positions
        targets += c
    hidden = model.model(
        input_ids=torch.tensor([ids], device=device),
        position_ids=torch.tensor([pos], device=device),
        use_cache=False,
    ).last_hidden_state[0]  # [L, H]
    logp, _ = chunked_head_logprobs(
        model.lm_head, hidden[torch.tensor(where, device=device)],
        torch.tensor(targets, device=device), chunk_size=1024, with_entropy=False, temperature=1.0,
    )  # fmt: skip
    return logp, len(ids)


def layout_pass(model, exp, layout: str, device) -> tuple[torch.Tensor, int]:
    """Forward + backward of Σ logp under ``layout``; (logp of every completion token in rollout
    order, detached, [Σ c_i]; tokens laid out)."""
    from llm.update.batching import collate, forward_logprobs, microbatches

    kind, _, value = layout.partition(":")
    rows = torch.arange(len(exp))
    pieces: dict[int, torch.Tensor] = {}
    laid = 0
    if kind == "packed":
        for group in pack(exp, int(value)):
            logp, length = packed_logprobs(model, exp, group, device)
            logp.float().sum().backward()
            laid += length
            sizes = [len(exp.gen.completion_ids[i]) for i in group]
            for i, part in zip(group, logp.detach().float().split(sizes)):
                pieces[i] = part
    else:
        if kind == "padded":
            parts = [rows]
        elif kind == "rows":
            parts = microbatches(exp, rows, max_rows=int(value))
        elif kind == "sorted":
            parts = microbatches(exp, rows, max_rows=0, max_tokens=int(value))
        else:
            raise ValueError(f"unknown layout {layout!r} (padded, rows:k, sorted:B, packed:B)")
        for part in parts:
            batch = collate(exp, part, 0, device)
            out = forward_logprobs(model, batch, chunk_size=1024)
            out.logp.float().sum().backward()
            laid += batch.input_ids.numel()
            for j, i in enumerate(part.tolist()):
                pieces[i] = out.logp[j, : len(exp.gen.completion_ids[i])].detach().float()
    return torch.cat([pieces[i].cpu() for i in range(len(exp))]), laid


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model = build_model(args, device, dtype)
    exp = make_rollout(args)
    real = sum(len(p) + len(c) for p, c in zip(exp.gen.prompt_ids, exp.gen.completion_ids))
    layouts = ["padded", *(f"rows:{k}" for k in args.row_sizes)]
    layouts += [f"{kind}:{b}" for b in args.budgets for kind in ("sorted", "packed")]
    reference = None
    rows = []
    for layout in layouts:
        model.zero_grad(set_to_none=True)
        logp, laid = layout_pass(model, exp, layout, device)  # warm-up, and the values
        reference = logp if reference is None else reference
        walls, cpus = [], []
        for _ in range(args.repeats):
            model.zero_grad(set_to_none=True)
            wall, cpu, _ = timed(lambda layout=layout: layout_pass(model, exp, layout, device),
                                 device)  # fmt: skip
            walls.append(wall)
            cpus.append(cpu)
        model.zero_grad(set_to_none=True)
        peak, _ = peak_memory(lambda layout=layout: layout_pass(model, exp, layout, device), device)
        rows.append({
            "layout": layout, "cpu_s": statistics.median(cpus), "wall_s": statistics.median(walls),
            "tokens_laid_out": laid, "real_tokens": real, "efficiency": real / laid,
            "peak_mb": peak / 2**20, "max_abs_dlogp": float((logp - reference).abs().max()),
        })  # fmt: skip
        print(f"{layout} done", flush=True)
    base = rows[0]
    for row in rows:
        row["cpu_speedup_vs_padded"] = base["cpu_s"] / row["cpu_s"]
        row["wall_speedup_vs_padded"] = base["wall_s"] / row["wall_s"]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--rows", type=int, default=32, help="sequences in the rollout")
    p.add_argument("--prompt-len", type=int, default=30)
    p.add_argument("--max-completion", type=int, default=64)
    p.add_argument("--row-sizes", type=int, nargs="*", default=[8])
    p.add_argument("--budgets", type=int, nargs="+", default=[1024, 2048])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-name", default=None)
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible")
    torch.set_num_threads(args.threads)
    args.budgets = sorted(args.budgets)
    rows = run(args)
    cols = ["layout", "cpu_s", "wall_s", "cpu_speedup_vs_padded", "tokens_laid_out", "efficiency",
            "peak_mb", "max_abs_dlogp"]  # fmt: skip
    print_table(rows, cols)
    name = args.out_name or f"padding_{torch.device(args.device).type}"
    print(f"wrote {write_json(name, {'args': vars(args), 'rows': rows})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
