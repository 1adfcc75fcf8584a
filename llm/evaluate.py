"""`ticgrpo eval`: score a local model on one problem file, or on a suite of benchmarks.

    ticgrpo eval --model DIR [--checkpoint RUN] --data FILE [--k 8] ...
    ticgrpo eval --model DIR [--checkpoint RUN] --suite paper|FILE.yaml [--bench-data NAME=PATH]

`--data` writes `eval_results.json` (metrics, per-problem counts and completions, the
arguments); `--suite` runs several benchmarks, each with its own decoding, and puts the paper's
Table 1 value beside ours (`llm.eval.suite`). The metrics are `llm.eval.metrics` (avg@k, its
standard error, unbiased pass@k), re-exported here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from llm.config.checks import GENERATIONS
from llm.eval.metrics import evaluate, evaluate_on_ranks, pass_at_k, resolve_reward, summarize

__all__ = [
    "evaluate", "evaluate_on_ranks", "load_model", "main", "pass_at_k", "run_method", "summarize",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# ticgrpo eval


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ticgrpo eval",
        description="Accuracy averaged over k samples (avg@k) and unbiased pass@k of a local "
        "causal LM: on one problem file (--data), or on a suite of benchmarks, each with its own "
        "decoding (--suite paper | FILE.yaml; see llm/eval/suite.py and docs/TRAINER.md).",
    )
    p.add_argument("--model", required=True, help="local model folder (from_pretrained)")
    p.add_argument("--data", help="one problem file: .jsonl, .json or .parquet")
    p.add_argument("--suite", help="benchmark suite: 'paper' (AIME24/25 Avg@32, MATH500 and "
                   "LiveCodeBench greedy) or a YAML file")  # fmt: skip
    p.add_argument("--bench-data", action="append", default=[], metavar="NAME=PATH",
                   help="suite: the local file of benchmark NAME (repeatable)")  # fmt: skip
    p.add_argument("--only", help="suite: comma-separated benchmark names to run")
    p.add_argument("--paper-model", help="suite: model name for the paper's column (default: "
                   "the --model folder's name, e.g. Qwen3-1.7B)")  # fmt: skip
    p.add_argument("--paper-method", help="suite: method for the paper's column (default: the "
                   "--checkpoint run's config.yaml method)")  # fmt: skip
    p.add_argument("--checkpoint", help="run or checkpoint folder whose weights replace --model's")
    p.add_argument("--k", type=int, help="--data: samples per problem (default 8)")
    p.add_argument("--max-new-tokens", type=int, help="length budget (default 1024 for --data; "
                   "the suite's otherwise)")  # fmt: skip
    p.add_argument("--temperature", type=float, help="--data: sampling temperature (default 1)")
    p.add_argument("--top-p", type=float, help="--data: nucleus threshold (default 1)")
    p.add_argument("--reward", help="--data: registered reward name (default math)")
    p.add_argument("--schema", help="--data: data schema: auto (default), plain, dapo")
    p.add_argument("--limit", type=int, help="evaluate only the first N problems (of each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--batch-size",
        type=int,
        help="sequences per generate call (default: all with plain; from free memory with static)",
    )
    p.add_argument(
        "--generation",
        default="plain",
        choices=list(GENERATIONS),
        help="sampling path: plain (reference) or static (static KV cache, compiled on CUDA)",
    )
    p.add_argument("--no-chat-template", action="store_true", help="plain User:/Assistant: prompt")
    p.add_argument("--out", help="folder for the results (default: print only)")
    return p


def _check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments (None when fine); fills --data's defaults."""
    if not (Path(args.model) / "config.json").is_file():
        return f"--model {args.model}: not a model folder (no config.json)"
    if args.checkpoint and not Path(args.checkpoint).is_dir():
        return f"--checkpoint {args.checkpoint}: no such folder (a run or checkpoint folder)"
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        return f"--out {args.out} is a file: give a folder for the results"
    if bool(args.data) == bool(args.suite):
        return "give exactly one of --data FILE (one benchmark) or --suite NAME|FILE"
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        return f"--max-new-tokens must be >= 1 (got {args.max_new_tokens})"
    if args.limit is not None and args.limit < 1:
        return f"--limit must be >= 1 (got {args.limit})"
    per_file = ("k", "temperature", "top_p", "reward", "schema")
    if args.suite:
        given = [f"--{n.replace('_', '-')}" for n in per_file if getattr(args, n) is not None]
        if given:
            return (f"{', '.join(given)} apply to --data; a suite sets them per benchmark "
                    "(edit the suite file)")  # fmt: skip
        bad = [b for b in args.bench_data if "=" not in b]
        return f"--bench-data expects NAME=PATH, got {bad[0]!r}" if bad else None
    for name, default in zip(per_file, (8, 1.0, 1.0, "math", "auto")):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if not Path(args.data).is_file():
        return f"--data {args.data}: no such file"
    if args.k < 1:
        return f"--k must be >= 1 (got {args.k})"
    if not args.temperature > 0 or not 0 < args.top_p <= 1:
        return f"need --temperature > 0 and 0 < --top-p <= 1 (got {args.temperature}, {args.top_p})"
    return None


def load_model(model_dir: str, checkpoint: str | None = None):
    """(model, tokenizer): bf16 on a GPU, fp32 on CPU; a run's checkpoint weights when given."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.bfloat16 if cuda else torch.float32
    ).to("cuda" if cuda else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if checkpoint:
        from llm.runstate.checkpoint import load_checkpoint

        load_checkpoint(checkpoint, model=model, optimizer=None, restore_rng=False)
    return model, tokenizer


def run_method(checkpoint: str | None) -> str | None:
    """The ``method`` in the config.yaml of the run holding ``checkpoint`` (None if absent)."""
    if not checkpoint:
        return None
    import yaml

    for folder in (Path(checkpoint), *Path(checkpoint).parents[:2]):
        cfg = folder / "config.yaml"
        if cfg.is_file():
            data = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
            return data.get("method") if isinstance(data, dict) else None
    return None


def _suite_main(args: argparse.Namespace) -> int:
    from llm.eval.suite import EvalContext, SuiteError, load_suite, run_suite, write_suite_result

    overrides = {}
    if args.limit:
        overrides["limit"] = args.limit
    if args.max_new_tokens:
        overrides["max_new_tokens"] = args.max_new_tokens
    try:
        benches = load_suite(
            args.suite, data=dict(b.split("=", 1) for b in args.bench_data),
            only=[x for x in (args.only or "").split(",") if x], overrides=overrides,
        )  # fmt: skip
        for b in benches:  # unknown rewards fail before the model loads
            resolve_reward(b.reward)
    except (SuiteError, KeyError, ValueError) as e:
        print(f"ticgrpo eval: {e}", file=sys.stderr)
        return 2
    model, tokenizer = load_model(args.model, args.checkpoint)
    ctx = EvalContext(
        seed=args.seed,
        batch_size=args.batch_size,
        chat_template=not args.no_chat_template,
        generation=args.generation,
    )
    try:
        result = run_suite(
            model, tokenizer, benches, ctx, model_name=args.paper_model or args.model,
            method=args.paper_method or run_method(args.checkpoint),
        )  # fmt: skip
    except (SuiteError, ValueError, OSError) as e:  # DataError names the file, row and field
        print(f"ticgrpo eval: {e}", file=sys.stderr)
        return 2
    from llm.eval.suite import markdown_table

    print(markdown_table(result), end="")
    if args.out:
        written = write_suite_result(result, args.out)
        print(f"wrote {len(written)} files to {Path(args.out)}")
    return 0


def _checkpoint_problem(path: str) -> str | None:
    """Why ``--checkpoint`` cannot be loaded, found before the model is (None when it can)."""
    from llm.runstate.checkpoint import CheckpointError, latest_checkpoint

    try:
        found = latest_checkpoint(path)
    except CheckpointError as e:
        return f"--checkpoint {e}"
    return None if found is not None else f"--checkpoint {path}: no complete checkpoint in it"


def main(argv: list[str] | None = None) -> int:
    from llm.runstate.checkpoint import CheckpointError

    args = build_parser().parse_args(argv)
    if msg := _check_args(args) or (args.checkpoint and _checkpoint_problem(args.checkpoint)):
        print(f"ticgrpo eval: {msg}", file=sys.stderr)
        return 2
    try:
        return _main(args)
    except CheckpointError as e:  # e.g. weights of another architecture than --model
        print(f"ticgrpo eval: {' '.join(str(e).split())[:500]}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    if args.suite:
        return _suite_main(args)
    from llm.data.loaders import load_examples

    try:
        reward_fn = resolve_reward(args.reward)
        loaded = load_examples(args.data, schema=args.schema, limit=args.limit)
    except (KeyError, ValueError, OSError) as e:  # unknown reward, DataError (a ValueError)
        print(f"ticgrpo eval: {e}", file=sys.stderr)
        return 2
    model, tokenizer = load_model(args.model, args.checkpoint)
    result = evaluate(
        model,
        tokenizer,
        loaded.examples,
        k=args.k,
        max_new_tokens=args.max_new_tokens or 1024,
        temperature=args.temperature,
        top_p=args.top_p,
        reward=reward_fn,
        seed=args.seed,
        batch_size=args.batch_size,
        chat_template=not args.no_chat_template,
        generation=args.generation,
    )
    problems = result.pop("problems")
    for key, value in result.items():
        print(f"{key:<24} {value:.4f}" if isinstance(value, float) else f"{key:<24} {value}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        payload = {"metrics": result, "args": vars(args), "skipped_rows": loaded.skipped}
        payload["problems"] = problems
        tmp = out / "eval_results.json.tmp"
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, out / "eval_results.json")
        print(f"wrote {out / 'eval_results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
