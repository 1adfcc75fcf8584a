"""``ticgrpo reproduce``: run the theory lab and write figures, data, REPORT.md and summary.json.

Quick by default (52 s of CPU time measured, user + sys, one torch thread; docs/THEORY_LAB.md);
``--full`` for publication sizes (more seeds, step sizes, T values and K).
Every experiment writes ``OUT/<experiment>/data.json`` (+ CSV where tabular) and its figure as PNG
and PDF; ``paper_figs.fig_*`` redraw any figure from that data alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from analysis.report import write_outputs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ticgrpo reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("runs/reproduce"), help="output folder")
    p.add_argument("--full", action="store_true", help="publication sizes (slow)")
    p.add_argument("--only", default="", help="comma-separated experiments (default: all)")
    p.add_argument("--seed", type=int, default=0, help="base seed of MDPs and runs")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    from toy.experiments import EXPERIMENTS  # after the backend is set
    from toy.experiments.common import Context

    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        print(f"ticgrpo reproduce: unknown experiment(s) {unknown}; known: {list(EXPERIMENTS)}")
        return 2
    torch.set_num_threads(max(1, args.threads))
    ctx = Context(out=args.out, full=args.full, seed=args.seed)
    start = time.perf_counter()
    claims, timings = [], {}
    for i, name in enumerate(names, 1):
        ctx.log(f"[{i}/{len(names)}] {name} ...")
        t0 = time.perf_counter()
        claims += EXPERIMENTS[name](ctx)
        timings[name] = round(time.perf_counter() - t0, 2)
    config = {
        "mode": "full" if args.full else "quick",
        "seed": args.seed,
        "only": names if args.only else [],
        "experiment_seconds": timings,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    summary = write_outputs(args.out, claims, config, time.perf_counter() - start)
    held = sum(c["holds"] for c in summary["claims"])
    ctx.log(f"done: {held}/{len(claims)} claims hold; see {args.out / 'REPORT.md'}")
    for c in summary["claims"]:
        mark = "holds" if c["holds"] else "DOES NOT HOLD"
        print(f"  {c['id']:<32} {mark:<14} measured={c['measured']}")
    return 0
