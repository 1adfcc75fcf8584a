"""Our GRPO trainer vs TRL's ``GRPOTrainer`` on the same work, side by side in one run (CPU).

    PYTHONPATH=/path/to/trl_site python -m bench.bench_trainer_vs_trl          # both sides
    python -m bench.bench_trainer_vs_trl --sides ours                           # without TRL

Same tiny Qwen2 model (``llm.tiny.build_tiny``, random weights, built locally), same rendered
prompt strings, group size G, completion budget L, K optimizer steps per rollout on one
mini-batch of all N = P·G sequences (TRL: ``num_iterations=K``, ``steps_per_generation=1``),
AdamW with the same learning rate, β = 0, GRPO's loss, sampling at temperature 1, top-p 1,
no top-k, gradient checkpointing off on both sides unless ``--gradient-checkpointing`` (TRL's
``GRPOConfig`` turns it on by default, so it is set explicitly). Each side runs in its own subprocess (``--child``); the sides alternate over
``--rounds`` so machine load drifts hit both alike. The first ``--warmup`` RL steps of each run
are dropped.

Measured per RL step: ``gen_s`` = sampling + reward + old log-probs (everything before the
first gradient step of the rollout) and ``update_s`` = the K optimizer steps; wall seconds and,
as ``*_cpu_s``, the process's CPU seconds (``time.process_time``, all threads), which a busy
shared machine disturbs much less than wall time. Medians over the timed steps of all rounds. Peak memory: the
process's resident-set high-water mark (``VmHWM``), reset through ``/proc/self/clear_refs``
just before training starts, minus the resident set at that moment — so imports and the model
load are not counted, for either side. Ratios are TRL / ours (> 1: ours is faster / smaller).

Our side: ``--ours trainer`` (default) runs ``llm.train.train`` itself, its phases timed by
wrapping ``collect``/``sequence_logprobs`` (gen) and ``inner_steps`` (update);
``--ours components`` is the same pipeline built by hand from ``llm.rollout.generate``,
``llm.logprobs.token_logprobs`` and ``ticgrpo.policy_loss`` (a check on the trainer's overhead).
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

from bench._common import print_table, write_json
from bench._trainer_sides import (
    run_ours_components,
    run_ours_trainer,
    run_trl,
    setup_workload,
)

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("gen_s", "update_s", "step_s", "gen_cpu_s", "update_cpu_s", "step_cpu_s", "peak_rss_mb")


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
    argv = ["--gradient-checkpointing"] if args.gradient_checkpointing else []
    argv += ["--no-reuse-logp"] if args.no_reuse_logp else []
    for k in keys:
        if getattr(args, k) is not None:
            argv += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    return argv


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    steps = [s for r in runs for s in r["per_step"]]
    out: dict[str, Any] = {}
    for kind in ("", "_cpu"):
        out[f"gen{kind}_s"] = statistics.median(s[f"gen{kind}_s"] for s in steps)
        out[f"update{kind}_s"] = statistics.median(s[f"update{kind}_s"] for s in steps)
        out[f"step{kind}_s"] = statistics.median(
            s[f"gen{kind}_s"] + s[f"update{kind}_s"] for s in steps
        )
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    lengths = [s["mean_completion_tokens"] for s in steps if "mean_completion_tokens" in s]
    out["mean_completion_tokens"] = statistics.mean(lengths) if lengths else None
    out["rl_steps_timed"] = len(steps)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sides", nargs="+", default=["ours", "trl"], choices=["ours", "trl"])
    p.add_argument("--ours", default="trainer", choices=["trainer", "components"])
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
    p.add_argument("--hidden", type=int, default=None, help="re-initialise wider (default 64)")
    p.add_argument("--layers", type=int, default=None, help="re-initialise deeper (default 2)")
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
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--prompts-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args)

    with tempfile.TemporaryDirectory(prefix="bench_trl_") as tmp:
        work = Path(tmp)
        paths = setup_workload(args, work)
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in args.sides}
        for r in range(args.rounds):
            for side in args.sides if r % 2 == 0 else list(reversed(args.sides)):
                runs[side].append(_spawn(args, side, paths, work / f"{side}_{r}.json"))
                print(f"round {r}: {side} done", flush=True)
    rows = [{"side": side, **_summarise(rs)} for side, rs in runs.items()]
    if len(rows) == 2:
        ours, trl = rows
        rows.append(
            {
                "side": "ratio trl/ours",
                **{k: trl[k] / ours[k] for k in METRICS},
            }
        )
    print_table(rows, ["side", *METRICS, "mean_completion_tokens", "rl_steps_timed"])
    workload = {k: v for k, v in vars(args).items() if k not in ("child", "result")}
    path = write_json(args.out_name, {"workload": workload, "rows": rows, "runs": runs})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
