"""`ticgrpo plot RUN...`: training curves of one or more runs, overlaid.

A `ticgrpo study` folder stands for all its arms, labelled as in the paper (GRPO, TIC-GRPO, ...).

Reads each run's `metrics.jsonl` (and `config.yaml` for its label, the method name) and draws
reward, eval accuracy, completion length, clip ratios, trajectory log-ratio and trajectory ESS
against the step: one figure with every panel (`curves.png`, `curves.pdf`), one image per panel
(`<panel>.png`, `.pdf`), and the plotted numbers (`plot_data.json`). Reads files only; never
imports the trainer. Values logged as `null` (non-finite) show as gaps.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: (file stem, title, key patterns); a pattern may hold `*` (e.g. eval/avg@* matches avg@8).
PANELS: list[tuple[str, str, list[str]]] = [
    ("reward", "reward (mean)", ["reward/mean"]),
    # pass@1 (unbiased) equals avg@k, so the panel shows avg@k (± its standard error) and the
    # pass@k' for k' >= 2.
    ("eval_accuracy", "eval accuracy (avg@k ± SE, pass@k)", ["eval/avg@*", "eval/pass@[2-9]*"]),
    ("completion_length", "completion length (tokens)", ["completions/mean_length"]),
    ("clip_ratio", "clip ratios", ["clip_ratio/low", "clip_ratio/high", "clip_ratio/region"]),
    ("traj_log_ratio", "trajectory log-ratio Σ_t ρ", ["log_ratio/traj_mean", "log_ratio/traj_max"]),
    ("ess", "trajectory ESS / N", ["ess/traj_frac"]),
]
LINESTYLES = ["-", "--", ":", "-."]


class PlotError(ValueError):
    """A run folder or file that cannot be plotted; the message names the file (and line)."""


@dataclass
class Run:
    path: Path
    label: str
    records: list[dict] = field(default_factory=list)

    def keys(self) -> set[str]:
        return {k for r in self.records for k in r}


def read_metrics(path: Path) -> list[dict]:
    """Parse a metrics.jsonl: one object with an integer `step` per line. Blank lines are
    skipped; a torn last line (a run killed mid-write) is skipped with a warning; any other bad
    line raises PlotError naming `file:line`."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    records = []
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if no == len(lines) and not text.endswith("\n"):
                warnings.warn(f"{path}:{no}: incomplete last line skipped", stacklevel=2)
                continue
            raise PlotError(f"{path}:{no}: not valid JSON ({e.msg})") from e
        if not isinstance(rec, dict):
            raise PlotError(f"{path}:{no}: expected a JSON object, got {type(rec).__name__}")
        step = rec.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise PlotError(f"{path}:{no}: missing or non-integer 'step' ({step!r})")
        records.append(rec)
    if not records:
        raise PlotError(f"{path}: no metrics lines")
    return records


def _find_method(cfg, depth: int = 0) -> str | None:
    """The first `method` value in the config, searching nested sections breadth-first."""
    if not isinstance(cfg, dict) or depth > 3:
        return None
    if isinstance(cfg.get("method"), str):
        return cfg["method"]
    for v in cfg.values():
        if (found := _find_method(v, depth + 1)) is not None:
            return found
    return None


def read_label(run_dir: Path) -> str | None:
    """The method named in `run_dir/config.yaml` (with "+no_is" for the no-IS ablation), or None
    when the file or key is absent."""
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        return None
    import yaml

    try:
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise PlotError(f"{cfg_path}: not valid YAML ({e})") from e
    method = _find_method(cfg)
    if method and isinstance(cfg, dict) and cfg.get("no_is") is True:
        return f"{method}+no_is"
    return method


def load_run(arg: str) -> Run:
    """A run from a run folder (holding metrics.jsonl) or a metrics.jsonl path."""
    path = Path(arg)
    if not path.exists():
        raise PlotError(f"{path}: no such file or folder")
    metrics = path / "metrics.jsonl" if path.is_dir() else path
    run_dir = metrics.parent
    if not metrics.is_file():
        raise PlotError(f"{metrics}: missing (is {path} a run folder?)")
    method = read_label(run_dir)
    return Run(run_dir, method or run_dir.name, read_metrics(metrics))


def load_study(path: str | Path) -> list[Run]:
    """The arms of a `ticgrpo study` folder (its `study.json` lists them), labelled as in the
    paper (GRPO, TIC-GRPO, ...); arms without a metrics.jsonl yet are left out."""
    path = Path(path)
    meta_path = path / "study.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        arms, labels = list(meta["arms"]), dict(meta.get("labels", {}))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PlotError(f"{meta_path}: not a study file ({e})") from e
    runs = []
    for arm in arms:
        if (path / arm / "metrics.jsonl").is_file():
            run = load_run(str(path / arm))
            run.label = labels.get(arm, arm)
            runs.append(run)
    if not runs:
        raise PlotError(f"{path}: no arm of the study has a metrics.jsonl yet")
    return runs


def load_runs(args: list[str]) -> list[Run]:
    """Runs from run folders, metrics.jsonl files and study folders (expanded to their arms)."""
    runs: list[Run] = []
    for arg in args:
        is_study = Path(arg).is_dir() and (Path(arg) / "study.json").is_file()
        runs += load_study(arg) if is_study else [load_run(arg)]
    return runs


def _disambiguate(runs: list[Run]) -> None:
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.label] = counts.get(r.label, 0) + 1
    for r in runs:
        if counts[r.label] > 1:
            r.label = f"{r.label} [{r.path.name}]"


def series(records: list[dict], key: str, smooth: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `key` sorted by step; the last line wins for a repeated step; null
    and non-numbers are NaN; `smooth` > 1 is a trailing moving average ignoring NaN."""
    by_step: dict[int, float] = {}
    for r in records:
        if key in r:
            v = r[key]
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            by_step[r["step"]] = float(v) if ok else math.nan
    steps = np.array(sorted(by_step), dtype=np.int64)
    values = np.array([by_step[s] for s in steps], dtype=np.float64)
    if smooth > 1 and len(values):
        out = np.full_like(values, np.nan)
        for i in range(len(values)):
            window = values[max(0, i - smooth + 1) : i + 1]
            if np.isfinite(window).any():
                out[i] = np.nanmean(window)
        values = out
    return steps, values


def resolve_keys(patterns: list[str], runs: list[Run]) -> list[str]:
    """The logged keys matching each pattern, in pattern order, without repeats."""
    present = sorted(set().union(*(r.keys() for r in runs)))
    keys: list[str] = []
    for pat in patterns:
        for k in present:
            # a `<key>_se` series is drawn as the band around `<key>`, not as a line of its own
            if fnmatch.fnmatchcase(k, pat) and k not in keys and not k.endswith("_se"):
                keys.append(k)
    return keys


def _line_label(run: str, key: str, li: int, num_runs: int, num_keys: int) -> str | None:
    """One legend entry per run (its first key) and, with several runs, one per key style:
    6 runs × 4 keys read as 10 entries, not 24."""
    if num_keys == 1:
        return run
    if num_runs == 1:
        return key
    return run if li == 0 else None


def draw_panel(ax, runs: list[Run], keys: list[str], title: str, smooth: int) -> dict:
    """Overlay every run (one colour each) and key (one line style each); return the data."""
    data: dict = {}
    for ci, run in enumerate(runs):
        color = f"C{ci % 10}"
        for li, key in enumerate(keys):
            steps, values = series(run.records, key, smooth)
            if not len(steps):
                continue
            sparse = len(steps) < 0.5 * len(run.records)  # e.g. periodic eval
            label = _line_label(run.label, key, li, len(runs), len(keys))
            ax.plot(
                steps,
                values,
                color=color,
                linestyle=LINESTYLES[li % len(LINESTYLES)],
                marker="o" if sparse else None,
                markersize=3,
                label=label,
            )
            entry = {
                "step": steps.tolist(),
                "value": [None if math.isnan(v) else v for v in values.tolist()],
            }
            se_steps, se = series(run.records, key + "_se", 0)
            if len(se_steps) == len(steps) and np.array_equal(se_steps, steps):
                ax.fill_between(steps, values - se, values + se, color=color, alpha=0.2, lw=0)
                entry["se"] = [None if math.isnan(v) else v for v in se.tolist()]
            data.setdefault(run.label, {})[key] = entry
    if len(runs) > 1 and len(keys) > 1:  # colour = run (labelled above), line style = key
        for li, key in enumerate(keys):
            ax.plot([], [], color="0.4", linestyle=LINESTYLES[li % len(LINESTYLES)], label=key)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if data:
        ax.legend(fontsize=7)
    return data


def plot_runs(runs: list[Run], out: Path, panels: list[tuple[str, str, list[str]]], smooth: int):
    """Write the combined figure, one figure per panel and plot_data.json; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    active = [
        (stem, title, keys) for stem, title, pats in panels if (keys := resolve_keys(pats, runs))
    ]
    for stem, _, pats in panels:
        if stem not in {a[0] for a in active}:
            print(f"ticgrpo plot: no data for panel {stem!r} (keys {', '.join(pats)})")
    if not active:
        raise PlotError("none of the runs logged any of the plotted keys")
    out.mkdir(parents=True, exist_ok=True)
    ncols = min(3, len(active))
    nrows = math.ceil(len(active) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)
    written, all_data = [], {}
    for ax, (stem, title, keys) in zip(axes.flat, active):
        all_data[stem] = draw_panel(ax, runs, keys, title, smooth)
    for ax in list(axes.flat)[len(active) :]:
        ax.set_visible(False)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"curves.{ext}", dpi=120)
        written.append(out / f"curves.{ext}")
    plt.close(fig)
    for stem, title, keys in active:
        fig, ax = plt.subplots(figsize=(6, 4))
        draw_panel(ax, runs, keys, title, smooth)
        fig.tight_layout()
        for ext in ("png", "pdf"):
            fig.savefig(out / f"{stem}.{ext}", dpi=120)
            written.append(out / f"{stem}.{ext}")
        plt.close(fig)
    runs_info = [{"label": r.label, "path": str(r.path)} for r in runs]
    (out / "plot_data.json").write_text(json.dumps({"runs": runs_info, "panels": all_data}))
    written.append(out / "plot_data.json")
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ticgrpo plot",
        description="Plot reward, eval accuracy, completion length, clip-ratio, trajectory "
        "log-ratio and ESS curves of one or more runs (overlaid) from their metrics.jsonl.",
    )
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="run folder, metrics.jsonl file, or `ticgrpo study` folder (all its arms)",
    )
    p.add_argument("--out", help="output folder (default RUN/plots for one run, else ./plots)")
    p.add_argument(
        "--keys", nargs="+", help="plot these keys (glob patterns allowed), one panel each"
    )
    p.add_argument("--smooth", type=int, default=1, help="moving-average window (default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smooth < 1:
        print("ticgrpo plot: --smooth must be >= 1", file=sys.stderr)
        return 2
    try:
        runs = load_runs(args.runs)
        _disambiguate(runs)
        panels = PANELS
        if args.keys:
            panels = [(k.replace("/", "_").replace("*", "x"), k, [k]) for k in args.keys]
        # one run or one study: its own plots/ folder; several: ./plots
        default_out = Path("plots")
        if len(args.runs) == 1:
            study = (Path(args.runs[0]) / "study.json").is_file()
            default_out = (Path(args.runs[0]) if study else runs[0].path) / "plots"
        written = plot_runs(runs, Path(args.out) if args.out else default_out, panels, args.smooth)
    except PlotError as e:
        print(f"ticgrpo plot: {e}", file=sys.stderr)
        return 2
    print(f"ticgrpo plot: wrote {len(written)} files to {written[0].parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
