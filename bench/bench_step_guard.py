"""Cost of the post-step guard (``guard_parameters``): one optimiser step with and without it.

    python -m bench.bench_step_guard                    # CPU, the 8.7 M-parameter bench model
    python -m bench.bench_step_guard --device cuda --dtype bfloat16 --hidden 2048 --layers 28 \\
        --heads 16 --kv-heads 8 --vocab 151936 --rows 8 --completion 1024   # Qwen3-1.7B-shaped

The work per repeat: forward + backward of ``Σ log π`` over ``--rows`` sequences, then
``llm.update.inner_steps._guarded_step`` (gradient clip, AdamW step) with the guard off and on,
interleaved so that machine noise hits both alike. The guard copies the parameters and the
optimiser state before the step, checks every parameter and a one-row probe forward for
non-finite values afterwards, and restores the copy on failure. Reported: process CPU seconds and
wall seconds of the step alone (median of ``--repeats``), the guard's ratio, its extra time as a
share of the forward + backward that precedes the step, and the memory the
guard's copy holds (parameters + optimiser state, counted from the tensors). Results:
bench/results/step_guard_<device>.json.
"""

from __future__ import annotations

import argparse
import statistics
from types import SimpleNamespace
from typing import Any

import torch

from bench._common import print_table, timed, write_json
from bench.bench_padding import add_model_arguments, build_model


def _batch(args: argparse.Namespace, device: torch.device):
    """Random token ids ``[rows, prompt + completion]`` and a one-row probe ``Batch``-like."""
    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, args.vocab, (args.rows, args.prompt_len + args.completion), generator=g)
    ids = ids.to(device)
    probe = SimpleNamespace(input_ids=ids[:1], attention_mask=torch.ones_like(ids[:1]))
    return ids, probe


def _state_bytes(model, optimizer) -> int:
    """Bytes of the parameters and optimiser state: what the guard's copy holds."""
    total = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    for state in optimizer.state.values():
        total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from llm.update.inner_steps import _guarded_step

    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    args.budgets = [args.prompt_len + args.completion]  # build_model sizes positions from it
    model = build_model(args, device, dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    ids, probe = _batch(args, device)
    configs = {
        guard: SimpleNamespace(max_grad_norm=1.0, guard_parameters=guard) for guard in (False, True)
    }

    def forward_backward() -> None:
        logits = model(input_ids=ids, use_cache=False).logits  # [rows, S, V]
        logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])
        (-logp.sum() / ids.numel()).backward()

    def step(guard: bool) -> tuple[float, float, float]:
        _, fb_cpu, _ = timed(forward_backward, device)
        wall, cpu, _ = timed(
            lambda: _guarded_step(model, optimizer, scheduler, configs[guard], 1.0,
                                  probe=probe if guard else None),
            device,
        )  # fmt: skip
        return wall, cpu, fb_cpu

    step(False)  # warm-up: creates AdamW's state
    times: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    for _ in range(args.repeats):
        for guard in (False, True):
            times[guard].append(step(guard))
    copy_bytes = _state_bytes(model, optimizer)
    rows = []
    for guard in (False, True):
        wall = statistics.median(t[0] for t in times[guard])
        cpu = statistics.median(t[1] for t in times[guard])
        fwd_bwd = statistics.median(t[2] for t in times[guard])
        rows.append({"guard": "on" if guard else "off", "step_cpu_s": cpu, "step_wall_s": wall,
                     "fwd_bwd_cpu_s": fwd_bwd, "copy_mb": copy_bytes / 2**20 if guard else 0.0})  # fmt: skip
    rows[1]["cpu_ratio"] = rows[1]["step_cpu_s"] / rows[0]["step_cpu_s"]
    # the guard's extra CPU time as a share of one micro-batch's forward + backward
    rows[1]["extra_vs_fwd_bwd"] = (rows[1]["step_cpu_s"] - rows[0]["step_cpu_s"]) / rows[0][
        "fwd_bwd_cpu_s"
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(p)
    p.add_argument("--rows", type=int, default=8, help="sequences per step")
    p.add_argument("--prompt-len", type=int, default=30)
    p.add_argument("--completion", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-name", default=None)
    args = p.parse_args(argv)
    rows = run(args)
    print_table(rows, ["guard", "step_cpu_s", "step_wall_s", "fwd_bwd_cpu_s", "cpu_ratio",
                      "extra_vs_fwd_bwd", "copy_mb"])  # fmt: skip
    name = args.out_name or f"step_guard_{args.device}"
    print("wrote", write_json(name, {"args": vars(args), "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
