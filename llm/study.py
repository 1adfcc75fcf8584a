"""``ticgrpo study``: the paper's comparison (v5 Table 1, Table 2, Fig. 1) as one command.

    ticgrpo study --preset paper [--config F] [--set key=value ...] --out runs/study
                  [--arms grpo,gspo,...] [--suite paper --bench-data aime24=PATH ...]
                  [--summary-only]

Every arm is one ``ticgrpo train`` run in ``OUT/<arm>/`` built from the same preset, file and
``--set`` overrides plus the arm's own keys (``ARMS``), so all arms share the seed, hence the
data order (the per-epoch permutation is seeded by ``seed`` alone), the first rollout (the same
initial weights sample from the same seeds) and every other setting. Arms run one after another;
an arm whose ``final_metrics.json`` exists is skipped, one with checkpoints is resumed, so an
interrupted study continues where it stopped (one arm per GPU: ``--arms tic_grpo`` in
parallel, then ``--summary-only``). A folder started with other settings is refused. Under
torchrun (``paper-8b``) one launch trains one arm (the study files are rank 0's).

With ``--suite`` each finished arm is also evaluated with ``ticgrpo eval --suite``
(``OUT/<arm>/eval_suite/``). The summary, ``OUT/study_summary.md`` and ``.json``, has one row
per arm: training reward (first and last tenth of the steps), the trainer's last evaluation, the
clipped share, the trajectory ESS, wall time, and each suite benchmark beside the paper's value
for the same model and method. ``OUT/plots/`` overlays the arms (``ticgrpo plot OUT`` redraws).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

#: arm name -> (label, the config keys that define it). Everything else is shared.
ARMS: dict[str, tuple[str, dict]] = {
    "grpo": ("GRPO", {"method": "grpo"}),
    "gspo": ("GSPO", {"method": "gspo"}),
    "tic_grpo": ("TIC-GRPO", {"method": "tic_grpo"}),
    "grpo_traj_is": ("GRPO+Traj_IS", {"method": "grpo_traj_is"}),
    "grpo2": ("GRPO+UB_Clip", {"method": "grpo2"}),
    "no_is": ("no-IS", {"method": "grpo", "no_is": True}),
}
ARM_KEYS = ("method", "no_is")
STUDY_FILE = "study.json"
DONE_FILE = "final_metrics.json"


class StudyError(ValueError):
    """A study that cannot run as asked; the message says what to change."""


def arm_overrides(arm: str) -> list[str]:
    """``--set`` strings of an arm's own keys."""
    return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in ARMS[arm][1].items()]


def parse_arms(text: str | None) -> list[str]:
    """Comma-separated arm names (all of ``ARMS`` when empty), in ``ARMS`` order."""
    if not text:
        return list(ARMS)
    names = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in names if a not in ARMS]
    if bad:
        raise StudyError(f"unknown arm(s) {bad}; choose from {list(ARMS)}")
    return [a for a in ARMS if a in names]


def build_arm_configs(preset, config_file, overrides: list[str], arms: list[str]) -> dict:
    """arm -> validated TrainConfig; the user's overrides may not set an arm key."""
    from llm.config import build as C

    fixed = sorted({k.split("=", 1)[0].strip() for k in overrides} & set(ARM_KEYS))
    if fixed:
        raise StudyError(f"--set {fixed[0]}=... is what each arm sets; choose arms with --arms")
    return {a: C.build_config(preset=preset, config_file=config_file,
                              overrides=list(overrides) + arm_overrides(a)) for a in arms}  # fmt: skip


def _check_folder(run_dir: Path, cfg) -> None:
    """Refuse an arm folder started with a different config."""
    from llm.config import build as C

    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    old, new = C.load_yaml(saved), C.to_dict(cfg)
    diff = sorted(k for k in new if old.get(k) != new[k])
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in diff[:6])
        raise StudyError(f"{run_dir} was started with other settings ({shown}); use another "
                         "--out, or the settings it was started with")  # fmt: skip


def run_arm(arm: str, cfg, out: Path) -> dict:
    """Train one arm into ``out/arm`` (skip when done, resume when checkpointed)."""
    from llm.runstate.checkpoint import latest_checkpoint
    from llm.train import train

    run_dir = out / arm
    done = run_dir / DONE_FILE
    if done.is_file():
        print(f"ticgrpo study: {arm}: done, skipped ({done})")
        return json.loads(done.read_text())
    _check_folder(run_dir, cfg)
    resume = run_dir.is_dir() and latest_checkpoint(run_dir) is not None
    if not resume:  # lines of an attempt that died before its first checkpoint: start clean
        for name in ("metrics.jsonl", "samples.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
    print(f"ticgrpo study: {arm}: {'resuming' if resume else 'training'} in {run_dir}")
    last = train(cfg, run_dir, resume=resume)
    if os.environ.get("RANK", "0") == "0":
        _write(done, json.dumps(last, indent=1))
    return last


def eval_arm(arm: str, cfg, out: Path, suite_args: dict) -> None:
    """Evaluate an arm's final weights with the suite into ``out/arm/eval_suite/``."""
    from llm.eval.suite import EvalContext, load_suite, run_suite, write_suite_result
    from llm.evaluate import load_model

    run_dir = out / arm
    if (run_dir / "eval_suite" / "eval_suite.json").is_file():
        return
    benches = load_suite(suite_args["suite"], data=suite_args.get("data"),
                         only=suite_args.get("only"), overrides=suite_args.get("overrides"))  # fmt: skip
    model_dir = run_dir / "tiny_model" if cfg.model == "tiny" else Path(cfg.model)
    model, tokenizer = load_model(str(model_dir), str(run_dir))
    ctx = EvalContext(seed=cfg.seed, batch_size=cfg.generation_batch_size or None,
                      chat_template=cfg.chat_template, generation=cfg.generation)  # fmt: skip
    method = None if cfg.no_is else cfg.method  # the paper reports no-IS only as a curve
    result = run_suite(model, tokenizer, benches, ctx, model_name=cfg.model, method=method)
    write_suite_result(result, run_dir / "eval_suite")


# ----------------------------------------------------------------------------- the summary


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def arm_summary(arm: str, run_dir: Path) -> dict:
    """One row of the summary from an arm's metrics.jsonl (and eval_suite.json when present)."""
    from analysis.llm_plots import read_metrics

    recs = sorted(read_metrics(run_dir / "metrics.jsonl"), key=lambda r: r["step"])
    tenth = max(1, len(recs) // 10)
    col = lambda key, rows: [r[key] for r in rows if key in r]  # noqa: E731
    row = {
        "arm": arm, "label": ARMS[arm][0], "steps": recs[-1]["step"],
        "reward_first": _mean(col("reward/mean", recs[:tenth])),
        "reward_last": _mean(col("reward/mean", recs[-tenth:])),
        "clip_region": _mean(col("clip_ratio/region", recs)),
        "ess_traj_frac": _mean(col("ess/traj_frac", recs)),
        "mean_length_last": _mean(col("completions/mean_length", recs[-tenth:])),
        "wall_s": sum(col("timing/step_s", recs)) + sum(col("timing/eval_s", recs)),
        "skipped_steps": recs[-1].get("skipped_steps"),
    }  # fmt: skip
    evals = [r for r in recs if any(k.startswith("eval/avg@") for k in r)]
    if evals:
        key = next(k for k in evals[-1] if k.startswith("eval/avg@") and not k.endswith("_se"))
        row["eval_key"], row["eval"] = key, evals[-1][key]
        row["eval_se"] = evals[-1].get(key + "_se")
    suite = run_dir / "eval_suite" / "eval_suite.json"
    if suite.is_file():
        row["suite"] = json.loads(suite.read_text())["rows"]
    return row


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _num(x, fmt: str = ".3f") -> str:
    return "–" if x is None else format(x, fmt)


def summary_markdown(rows: list[dict], meta: dict) -> str:
    """The study table (and one table per suite benchmark: ours beside the paper's)."""
    lines = [f"# Study: {meta.get('preset') or meta.get('config') or 'custom'}", "",
             f"Shared settings: seed {meta.get('seed')}, overrides {meta.get('overrides')}.", "",
             "| arm | steps | reward (first 10%) | reward (last 10%) | trainer eval (%) | "
             "clipped share | traj ESS/N | mean length (last 10%) | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        ev = "–"
        if r.get("eval") is not None:
            ev = f"{r['eval_key'].removeprefix('eval/')} {_pct(r['eval'])} ± {_pct(r.get('eval_se'))}"
        lines.append(
            f"| {r['label']} | {r['steps']} | {_num(r['reward_first'])} | "
            f"{_num(r['reward_last'])} | {ev} | {_num(r['clip_region'])} | "
            f"{_num(r['ess_traj_frac'])} | {_num(r['mean_length_last'], '.1f')} | "
            f"{_num(r['wall_s'], '.1f')} |"
        )
    benches = [b["benchmark"] for b in next((r["suite"] for r in rows if "suite" in r), [])]
    if benches:
        lines += ["", "Suite (ours: avg@k ± SE, pass@k, in %; paper: v5 Table 1/2 for the same "
                  "model and method).", "",
                  "| arm | " + " | ".join(f"{b} ours | {b} paper" for b in benches) + " |",
                  "|---|" + "---|---|" * len(benches)]  # fmt: skip
        for r in rows:
            cells = []
            by_name = {b["benchmark"]: b for b in r.get("suite", [])}
            for b in benches:
                x = by_name.get(b)
                if x is None:
                    cells += ["–", "–"]
                    continue
                k = x["k"]
                cells.append(f"avg@{k} {_pct(x[f'avg@{k}'])} ± {_pct(x[f'avg@{k}_se'])}, "
                             f"pass@{k} {_pct(x[f'pass@{k}'])}")  # fmt: skip
                cells.append("–" if x["paper"] is None else f"{x['paper']:.2f}")
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path) -> tuple[Path, Path]:
    """Summarise every finished arm listed in ``out/study.json``; return (md, json) paths."""
    meta = json.loads((out / STUDY_FILE).read_text())
    rows = [arm_summary(a, out / a) for a in meta["arms"] if (out / a / "metrics.jsonl").is_file()]
    if not rows:
        raise StudyError(f"{out}: no arm has a metrics.jsonl yet")
    md = _write(out / "study_summary.md", summary_markdown(rows, meta))
    js = _write(out / "study_summary.json", json.dumps({"meta": meta, "arms": rows}, indent=1))
    from analysis.llm_plots import PANELS, load_study, plot_runs

    plot_runs(load_study(out), out / "plots", PANELS, smooth=1)
    return md, js


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _record_study(out: Path, args, arms: list[str], cfgs: dict) -> None:
    """Write (or extend) ``out/study.json``: the shared sources and the arms run so far."""
    path = out / STUDY_FILE
    meta = json.loads(path.read_text()) if path.is_file() else {}
    same = {"preset": args.preset, "config": args.config, "overrides": args.overrides}
    if meta and {k: meta.get(k) for k in same} != same:
        raise StudyError(f"{path}: this study was started with {({k: meta.get(k) for k in same})}"
                         f", not {same}; use another --out")  # fmt: skip
    known = meta.get("arms", [])
    meta.update(same, seed=next(iter(cfgs.values())).seed,
                arms=[a for a in ARMS if a in set(known) | set(arms)],
                labels={a: ARMS[a][0] for a in ARMS})  # fmt: skip
    _write(path, json.dumps(meta, indent=1))


def _free_memory() -> None:
    """Drop the finished arm's model and optimiser before the next one loads (one process)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _check_launch(arms: list[str], suite: str | None) -> None:
    """Under torchrun (paper-8b) each launch trains one arm on every rank; the study files and
    the suite are written by one process afterwards (``--summary-only``, ``ticgrpo eval``)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and (len(arms) > 1 or suite):
        raise StudyError(
            "under torchrun run one arm per launch without --suite (--arms tic_grpo), then "
            "`ticgrpo study --out OUT --summary-only` and `ticgrpo eval --suite` in one process"
        )


def run_study(args) -> int:
    out = Path(args.out)
    if args.summary_only:
        md, _ = write_summary(out)
        print(md.read_text())
        return 0
    arms = parse_arms(args.arms)
    _check_launch(arms, args.suite)
    cfgs = build_arm_configs(args.preset, args.config, args.overrides, arms)
    out.mkdir(parents=True, exist_ok=True)
    if os.environ.get("RANK", "0") == "0":
        _record_study(out, args, arms, cfgs)
    suite_args = None
    if args.suite:
        from llm.eval.suite import load_suite

        suite_args = {"suite": args.suite, "data": dict(b.split("=", 1) for b in args.bench_data),
                      "only": None, "overrides": {"limit": args.eval_limit} if args.eval_limit else {}}  # fmt: skip
        # a missing file or a bad suite fails before any training
        load_suite(suite_args["suite"], data=suite_args["data"], overrides=suite_args["overrides"])
    for arm in arms:
        run_arm(arm, cfgs[arm], out)
        _free_memory()
        if suite_args:
            eval_arm(arm, cfgs[arm], out, suite_args)
            _free_memory()
    if os.environ.get("RANK", "0") != "0":  # torchrun: the files are rank 0's
        return 0
    md, js = write_summary(out)
    print(md.read_text())
    print(f"ticgrpo study: wrote {md}, {js} and {out / 'plots'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ticgrpo study",
        description="Run every arm of the paper's comparison (GRPO, GSPO, TIC-GRPO, GRPO+Traj_IS, "
        "GRPO+UB_Clip, no-IS) with identical data order and seeds; one run folder each; a "
        "summary table (markdown + JSON) and overlaid curves.",
    )
    p.add_argument("--preset", help="trainer preset (tiny | paper | paper-8b | ...)")
    p.add_argument("--config", help="YAML file of trainer config keys")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one trainer config key for every arm (repeatable)")  # fmt: skip
    p.add_argument("--arms", help=f"comma-separated subset of {','.join(ARMS)} (default: all)")
    p.add_argument("--out", required=True, help="study folder (one run folder per arm)")
    p.add_argument("--suite", help="evaluate each arm's final weights: 'paper' or a YAML file")
    p.add_argument("--bench-data", action="append", default=[], metavar="NAME=PATH",
                   help="suite: the local file of benchmark NAME (repeatable)")  # fmt: skip
    p.add_argument("--eval-limit", type=int, help="suite: first N problems of each benchmark")
    p.add_argument("--summary-only", action="store_true",
                   help="only (re)write the summary and plots of the arms already run")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.preset or args.config or args.summary_only):
        args.preset = "tiny"
    from llm.config.build import ConfigError
    from llm.eval.suite import SuiteError

    try:
        return run_study(args)
    except (StudyError, ConfigError, SuiteError) as e:
        print(f"ticgrpo study: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
