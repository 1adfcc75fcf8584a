"""Shared by the figure scripts: loading saved data, a consistent look, saving PNG and PDF."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {
    "grpo": "#d62728",
    "tic_grpo": "#1f77b4",
    "tic_grpo_ppo": "#17becf",
    "gspo": "#9467bd",
    "dapo": "#ff7f0e",
    "dr_grpo": "#8c564b",
    "no_is": "#2ca02c",
    "pg": "#7f7f7f",
    "grpo2": "#ff7f0e",
    "grpo_traj_is": "#e377c2",
}
LABELS = {
    "grpo": "GRPO",
    "grpo2": "GRPO₂ (UB_Clip + 1/T)",
    "grpo_traj_is": "GRPO+Traj_IS",
    "tic_grpo": "TIC-GRPO",
    "gspo": "GSPO",
    "no_is": "no-IS (∇ at θ_old)",
}


def label(key: str) -> str:
    return LABELS.get(key, key)


def color(key: str, fallback: int = 0) -> str:
    return COLORS.get(key, f"C{fallback % 10}")


def save(fig, out_dir: Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` into ``out_dir``; closes the figure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    fig.tight_layout()
    for p in paths:
        fig.savefig(p, dpi=130)
    plt.close(fig)
    return paths


def figure_main(plot: Callable[[dict, Path], list[Path]], doc: str, argv=None) -> int:
    """``--data DIR/data.json [--out DIR]``: redraw a figure from its saved data."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--data", required=True, type=Path, help="the experiment's data.json")
    parser.add_argument("--out", type=Path, default=None, help="folder (default: beside data)")
    args = parser.parse_args(argv)
    if not args.data.exists():
        parser.error(f"{args.data} does not exist; run `ticgrpo reproduce` first")
    data = json.loads(args.data.read_text())
    for p in plot(data, args.out or args.data.parent):
        print(p)
    return 0
