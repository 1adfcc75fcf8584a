"""Peak memory and time of chunked vs naive token log-probs, forward + backward.

    python -m bench.bench_logprobs                      # CPU: hidden 256, V = 151,936
    python -m bench.bench_logprobs --device cuda --preset qwen2.5-1.5b --batch 8

Two sweeps over one loss ``Σ logp`` (optionally ``+ Σ entropy``) on a Qwen2-architecture model
with random weights: sequence length S at Qwen's vocabulary, and vocabulary V at a fixed S. Each
case is run once under the memory meter (see bench/_common.py for the method) and ``--repeats``
times under the clock. The naive path is skipped when its projected peak
(``--naive-copies`` float32 ``[B, S, V]`` tensors) would pass ``--naive-limit-gb``.
``rest_mb`` = peak - gradients of the V-sized parameters - one float32 [chunk, V] buffer: for the
chunked path it stays flat as V grows (memory independent of V beyond one chunk).
Writes bench/results/logprobs_<device>.json.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from bench._common import machine, peak_memory, print_table, timed, write_json
from llm.update.logprobs import naive_token_logprobs, token_logprobs

QWEN_VOCAB = 151_936
PRESETS: dict[str, dict[str, Any]] = {
    # a small trunk so that the log-prob head dominates, as it does per token at V = 151,936
    "cpu-small": dict(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    ),
    # Qwen2.5-1.5B's architecture (config.json of the released model), random weights
    "qwen2.5-1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
    ),
}


def build_model(
    preset: str, vocab: int, dtype: torch.dtype, device: torch.device
) -> torch.nn.Module:
    cfg = Qwen2Config(vocab_size=vocab, max_position_embeddings=32768, **PRESETS[preset])
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).to(device=device, dtype=dtype)
    if preset != "cpu-small":
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    return model.train()


def run_case(args: argparse.Namespace, batch: int, seq: int, vocab: int) -> list[dict[str, Any]]:
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(args.preset, vocab, dtype, device)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen).to(device)
    mask = torch.ones_like(ids)
    rows, outputs = [], {}
    naive_gb = args.naive_copies * 4 * batch * seq * vocab / 2**30
    for method in ("naive", "chunked"):
        row: dict[str, Any] = dict(method=method, B=batch, S=seq, V=vocab, chunk=args.chunk_size)
        if method == "naive" and naive_gb > args.naive_limit_gb:
            row["note"] = f"skipped: projected {naive_gb:.1f} GB > --naive-limit-gb"
            rows.append(row)
            continue
        fn = naive_token_logprobs if method == "naive" else token_logprobs

        def step(fn=fn) -> torch.Tensor:
            out = fn(model, ids, mask, chunk_size=args.chunk_size, with_entropy=args.entropy)
            loss = out.logp.sum() + (out.entropy.sum() if args.entropy else 0.0)
            loss.backward()
            return out.logp.detach()

        # gradients are dropped outside the measured call so that freeing them is not counted
        model.zero_grad(set_to_none=True)
        peak, outputs[method] = peak_memory(step, device)
        times, cpu = [], []
        for _ in range(args.repeats):
            model.zero_grad(set_to_none=True)
            wall_s, cpu_s, _ = timed(step, device)
            times.append(wall_s)
            cpu.append(cpu_s)
        row.update(peak_mb=peak / 2**20, time_s=statistics.median(times), times_s=times)
        row.update(cpu_s=statistics.median(cpu))
        rows.append(row)
    if len(outputs) == 2:
        diff = (outputs["naive"] - outputs["chunked"]).abs().max().item()
        for row in rows:
            row["max_abs_diff_logp"] = diff
    # what any method must allocate: the gradients of the [V, H] head and embedding (one if tied)
    vocab_params = {id(p): p for p in (model.lm_head.weight, model.get_input_embeddings().weight)}
    grads_mb = sum(p.numel() * p.element_size() for p in vocab_params.values()) / 2**20
    for row in rows:
        row["vocab_grads_mb"] = grads_mb
        row["one_chunk_f32_mb"] = 4 * min(args.chunk_size, batch * (seq - 1)) * vocab / 2**20
    naive = next((r for r in rows if r["method"] == "naive" and "peak_mb" in r), None)
    chunked = rows[-1]
    if naive is not None:
        chunked["mem_ratio_naive_over_chunked"] = naive["peak_mb"] / chunked["peak_mb"]
        chunked["time_ratio_naive_over_chunked"] = naive["time_s"] / chunked["time_s"]
        chunked["cpu_ratio_naive_over_chunked"] = naive["cpu_s"] / chunked["cpu_s"]
    for row in rows:
        if "peak_mb" in row:  # what is left once the unavoidable V-sized parts are taken out
            row["rest_mb"] = row["peak_mb"] - row["vocab_grads_mb"] - row["one_chunk_f32_mb"]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seqs", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--vocabs", type=int, nargs="+", default=[18_992, 37_984, 75_968, QWEN_VOCAB])
    p.add_argument("--vocab-sweep-seq", type=int, default=2048)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--entropy", action="store_true", help="also differentiate the entropy")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--naive-limit-gb", type=float, default=8.0)
    p.add_argument("--naive-copies", type=float, default=4.0)
    p.add_argument("--out-name", default=None)
    args = p.parse_args(argv)
    args.preset = args.preset or ("qwen2.5-1.5b" if args.device.startswith("cuda") else "cpu-small")
    torch.set_num_threads(args.threads)

    cases = [(args.batch, s, QWEN_VOCAB) for s in args.seqs]
    cases += [(args.batch, args.vocab_sweep_seq, v) for v in args.vocabs]
    cases = list(dict.fromkeys(cases))
    rows: list[dict[str, Any]] = []
    for batch, seq, vocab in cases:
        rows += run_case(args, batch, seq, vocab)
        print(f"done B={batch} S={seq} V={vocab}", flush=True)
    columns = ["method", "B", "S", "V", "chunk", "peak_mb", "time_s", "cpu_s", "vocab_grads_mb"]
    columns += ["one_chunk_f32_mb", "rest_mb", "max_abs_diff_logp", "mem_ratio_naive_over_chunked"]
    columns += ["time_ratio_naive_over_chunked", "cpu_ratio_naive_over_chunked", "note"]
    print_table(rows, columns)
    name = args.out_name or f"logprobs_{torch.device(args.device).type}"
    path = write_json(name, {"args": vars(args), "rows": rows, "machine_at_start": machine()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
