"""Our GRPO trainer vs TRL's ``GRPOTrainer`` on the same work, side by side in one run.

    PYTHONPATH=/path/to/trl_site python -m bench.bench_trainer_vs_trl          # both sides, CPU
    python -m bench.bench_trainer_vs_trl --sides ours                           # without TRL

Paper-shaped run on one GPU (Qwen2.5-1.5B's architecture with random weights, 16 prompts × 8
samples, 1024 new tokens, one optimizer step per rollout in micro-batches of 4, checkpointing):

    PYTHONPATH=/path/to/trl_site python -m bench.bench_trainer_vs_trl --device cuda \\
        --dtype bfloat16 --arch qwen2.5-1.5b --prompts 16 --group 8 --max-new-tokens 1024 \\
        --inner-steps 1 --microbatch-size 4 --gradient-checkpointing --steps 2 --warmup 1 \\
        --rounds 1 --out-name trainer_vs_trl_cuda_qwen1.5b

and its CPU smoke (same vocabulary of 151,936, one 64-wide layer):
``--arch qwen2.5-1.5b --layers 1 --hidden 64 --max-new-tokens 8 --steps 1 --warmup 0``.

Same work on both sides:

- the model: one folder, built once (``--arch tiny``: ``llm.data.tiny.build_tiny``, 2 layers, hidden
  64, a 41-token tokenizer; ``--hidden/--layers`` re-initialise it wider/deeper;
  ``--arch qwen2.5-1.5b``: Qwen2.5-1.5B's architecture — hidden 1536, 28 layers, 12 heads, 2 KV
  heads, MLP 8960, vocab 151,936, tied embeddings — random weights, the tiny tokenizer, whose
  decoder skips the ids it does not know; ``--hidden/--layers`` shrink it, vocabulary kept),
  loaded by both in ``--dtype`` on ``--device`` (TRL: ``use_cpu`` on cpu, ``bf16=True`` for
  bfloat16; ours: the ``device``/``dtype`` config fields);
- the prompts AND their order: the same rendered prompt strings, listed in the order our
  trainer draws them (``llm.data.stream.DataStream``: epoch e is the permutation of
  ``np.random.default_rng([seed, e])``), which TRL reads front to back
  (``shuffle_dataset=False``). Each side records a digest of the P prompts it sampled for at
  every RL step; the JSON's ``same_prompts_in_trainer_order`` says whether every run of a side
  matched the table (the script exits 1 if one did not), and ``completion_tokens_by_step`` lists
  the per-step mean completion length of each side, so a reader can check the work matched
  (sampling noise differs: the sides draw from different random streams);
- group size G, completion budget L, K optimizer steps per rollout on one mini-batch of all
  N = P·G sequences (TRL: ``num_iterations=K``), in micro-batches of ``--microbatch-size``
  (TRL: ``per_device_train_batch_size`` with gradient accumulation N/M, ``steps_per_generation``
  N/M so one generation batch holds all N), AdamW with the same learning rate, β = 0, GRPO's
  loss, sampling at temperature 1, top-p 1, no top-k, gradient checkpointing off on both sides
  unless ``--gradient-checkpointing`` (TRL's ``GRPOConfig`` turns it on by default, so it is set
  explicitly), the same reward object.

Each side runs in its own subprocess (``--child``); the sides alternate over ``--rounds`` so
machine load drifts hit both alike. The first ``--warmup`` RL steps of each run are dropped.

Measured per RL step: ``gen_s`` = sampling + reward + old log-probs (everything before the
first gradient step of the rollout) and ``update_s`` = the K optimizer steps; wall seconds and,
as ``*_cpu_s``, the process's CPU seconds (``time.process_time``, all threads), which a busy
shared machine disturbs much less than wall time (on CUDA the clocks are read after
``torch.cuda.synchronize``, and wall time is the one to read). Medians over the timed steps of
all rounds. Peak memory: the process's resident-set high-water mark (``VmHWM``), reset through
``/proc/self/clear_refs`` just before training starts, minus the resident set at that moment —
so imports and the model load are not counted, for either side; on CUDA also
``torch.cuda.max_memory_allocated``, reset at the same moment, minus what was allocated then
(``peak_cuda_mb``) and in total (``cuda_total_mb``, weights included). Ratios are TRL / ours
(> 1: ours is faster / smaller). Results: ``<--results-dir>/<--out-name>.json``.

Our side: ``--ours trainer`` (default) runs ``llm.train.train`` itself, its phases timed by
wrapping ``collect``/``sequence_logprobs`` (gen) and ``inner_steps`` (update);
``--ours components`` is the same pipeline built by hand from ``llm.rollout.sampling.generate``,
``llm.update.logprobs.token_logprobs`` and ``ticgrpo.policy_loss`` (a check on the trainer's overhead;
CPU, no micro-batches).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench._common import RESULTS_DIR, print_table, write_json
from bench._trainer_sides import (
    ARCHS,
    run_ours_components,
    run_ours_trainer,
    run_trl,
    setup_workload,
    table_digests,
)

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("gen_s", "update_s", "step_s", "gen_cpu_s", "update_cpu_s", "step_cpu_s", "peak_rss_mb")
CUDA_METRICS = ("peak_cuda_mb", "cuda_total_mb")


# ---------------------------------------------------------------------------------- driver
def _child(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    table = json.loads(Path(args.prompts_file).read_text())
    out = Path(args.result).parent
    if args.child == "trl":
        result = run_trl(args, args.model_dir, table, out)
    elif args.ours == "trainer":
        result = run_ours_trainer(args, args.model_dir, table, out)
    else:
        result = run_ours_components(args, args.model_dir, table, out)
    result["per_step"] = result["per_step"][args.warmup :]
    Path(args.result).write_text(json.dumps(result))
    return 0


def _spawn(args: argparse.Namespace, side: str, paths: dict, result: Path) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    extra = [str(ROOT)] + ([args.trl_path] if args.trl_path else [])
    env["PYTHONPATH"] = os.pathsep.join(extra + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "bench.bench_trainer_vs_trl", "--child", side]
    cmd += ["--model-dir", paths["model_dir"], "--prompts-file", paths["prompts_file"]]
    cmd += ["--data-file", paths["data_file"]]
    cmd += ["--result", str(result)] + _workload_argv(args)
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} run failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(result.read_text())


def _workload_argv(args: argparse.Namespace) -> list[str]:
    keys = ["prompts", "group", "max_new_tokens", "inner_steps", "steps", "warmup", "lr"]
    keys += ["max_grad_norm", "seed", "threads", "ours", "hidden", "layers", "microbatch_tokens"]
    keys += ["microbatch_size", "device", "dtype", "arch"]
    argv = ["--gradient-checkpointing"] if args.gradient_checkpointing else []
    argv += ["--no-reuse-logp"] if args.no_reuse_logp else []
    for k in keys:
        if getattr(args, k) is not None:
            argv += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    return argv


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's row: medians over all timed RL steps of all its runs (seconds), peak memory
    (MiB, the largest run), the mean completion length (tokens) and the step count."""
    steps = [s for r in runs for s in r["per_step"]]
    out: dict[str, Any] = {}
    for kind in ("", "_cpu"):
        out[f"gen{kind}_s"] = statistics.median(s[f"gen{kind}_s"] for s in steps)
        out[f"update{kind}_s"] = statistics.median(s[f"update{kind}_s"] for s in steps)
        out[f"step{kind}_s"] = statistics.median(
            s[f"gen{kind}_s"] + s[f"update{kind}_s"] for s in steps
        )
    for key in ("peak_rss_mb", *CUDA_METRICS):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = max(values) if values else None
    lengths = [s["mean_completion_tokens"] for s in steps if "mean_completion_tokens" in s]
    out["mean_completion_tokens"] = statistics.mean(lengths) if lengths else None
    out["rl_steps_timed"] = len(steps)
    return out


def _ratio_row(ours: dict[str, Any], trl: dict[str, Any], keys: tuple[str, ...]) -> dict:
    ratio = {k: trl[k] / ours[k] for k in keys if trl.get(k) is not None and ours.get(k)}
    return {"side": "ratio trl/ours", **ratio}


def completion_lengths_by_step(runs: dict[str, list[dict[str, Any]]]) -> dict[str, list]:
    """Per side, the mean completion length (tokens) at each timed RL step, averaged over its
    rounds: the two lists hold the same prompts step for step, so they show whether the sides
    did the same amount of work."""
    out: dict[str, list] = {}
    for side, rs in runs.items():
        width = min(len(r["per_step"]) for r in rs)
        out[side] = [
            statistics.mean(
                r["per_step"][i].get("mean_completion_tokens", float("nan")) for r in rs
            )
            for i in range(width)
        ]
    return out


def prompt_order_check(runs: dict[str, list[dict[str, Any]]], table: dict, prompts: int) -> dict:
    """Per side, whether every run sampled for the table's prompts in the table's order (the
    order our trainer's DataStream draws them; TRL reads the table front to back)."""
    expected = table_digests(table, prompts)
    return {side: all(r.get("prompt_digests") == expected for r in rs) for side, rs in runs.items()}


def _check_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject bad combinations with a clear message (exit status 2); fill ``args.dtype``."""
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: CUDA is not available on this machine (torch "
                    f"{torch.__version__}, cuda {torch.version.cuda}); use --device cpu")  # fmt: skip
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    n = args.prompts * args.group
    if args.microbatch_size and n % args.microbatch_size:
        p.error(f"--microbatch-size {args.microbatch_size} must divide N = P·G = {n}")
    if args.ours == "components" and (args.device != "cpu" or args.microbatch_size):
        p.error("--ours components runs on the CPU without micro-batches only")
    for name in ("prompts", "group", "max_new_tokens", "inner_steps", "steps", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be at least 0")
    if args.group < 2:
        p.error("--group must be at least 2 (GRPO's group statistics)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sides", nargs="+", default=["ours", "trl"], choices=["ours", "trl"])
    p.add_argument("--ours", default="trainer", choices=["trainer", "components"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16"],
        help="weights dtype on both sides (TRL: bf16=True); default float32 on cpu, bfloat16 on cuda",
    )
    p.add_argument(
        "--arch",
        default="tiny",
        choices=ARCHS,
        help="tiny: llm.data.tiny's model; qwen2.5-1.5b: Qwen2.5-1.5B's architecture, random weights,\n"
        "vocab 151,936 (--hidden/--layers shrink it, keeping the vocabulary)",
    )
    p.add_argument("--prompts", type=int, default=4, help="P prompts per RL step")
    p.add_argument("--group", type=int, default=8, help="G samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=32, help="L, the completion budget")
    p.add_argument("--inner-steps", type=int, default=2, help="K optimizer steps per rollout")
    p.add_argument("--steps", type=int, default=5, help="timed RL steps per run")
    p.add_argument("--warmup", type=int, default=1, help="untimed RL steps at the start")
    p.add_argument("--rounds", type=int, default=2, help="runs of each side, alternating")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute activations in backward, on both sides (TRL's own default is on)",
    )
    p.add_argument("--hidden", type=int, default=None, help="re-initialise this wide (see --arch)")
    p.add_argument("--layers", type=int, default=None, help="re-initialise this deep (see --arch)")
    p.add_argument(
        "--microbatch-size",
        type=int,
        default=0,
        help="sequences per forward/backward on both sides (ours: microbatch_size; TRL:\n"
        "per_device_train_batch_size, gradient accumulation N/M); 0: all N = P·G at once",
    )
    p.add_argument(
        "--no-reuse-logp",
        action="store_true",
        help="ours: always run the separate old-log-prob pass (reuse_onpolicy_logp=false)",
    )
    p.add_argument(
        "--microbatch-tokens",
        type=int,
        default=0,
        help="ours: length-aware micro-batches of at most this many padded tokens (0: off)",
    )
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--trl-path", default=None, help="extra sys.path entry holding trl")
    p.add_argument("--out-name", default="trainer_vs_trl_cpu")
    p.add_argument("--results-dir", default=str(RESULTS_DIR), help="where <out-name>.json goes")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--prompts-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, checked (``--dtype`` filled in) unless this is a ``--child`` process."""
    p = build_parser()
    args = p.parse_args(argv)
    if not args.child:
        _check_options(p, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return _child(args)
    with tempfile.TemporaryDirectory(prefix="bench_trl_") as tmp:
        work = Path(tmp)
        paths = setup_workload(args, work)
        table = json.loads(Path(paths["prompts_file"]).read_text())
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in args.sides}
        for r in range(args.rounds):
            for side in args.sides if r % 2 == 0 else list(reversed(args.sides)):
                runs[side].append(_spawn(args, side, paths, work / f"{side}_{r}.json"))
                print(f"round {r}: {side} done", flush=True)
    rows = [{"side": side, **_summarise(rs)} for side, rs in runs.items()]
    metrics = METRICS + (CUDA_METRICS if args.device == "cuda" else ())
    if len(rows) == 2:
        by_side = {row["side"]: row for row in rows}
        rows.append(_ratio_row(by_side["ours"], by_side["trl"], metrics))
    print_table(rows, ["side", *metrics, "mean_completion_tokens", "rl_steps_timed"])
    same = prompt_order_check(runs, table, args.prompts)
    lengths = completion_lengths_by_step(runs)
    print(f"same prompts in our trainer's order, per side: {same}")
    for side, values in lengths.items():
        print(f"mean completion tokens per timed step, {side}: {[round(v, 1) for v in values]}")
    skip = ("child", "result", "model_dir", "prompts_file", "data_file")
    workload = {k: v for k, v in vars(args).items() if k not in skip}
    payload = {"workload": workload, "rows": rows, "same_prompts_in_trainer_order": same,
               "completion_tokens_by_step": lengths, "runs": runs}  # fmt: skip
    path = write_json(args.out_name, payload, out_dir=Path(args.results_dir))
    print(f"wrote {path}")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
