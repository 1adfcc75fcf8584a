"""Figure 4: exact J(θ_n) and ‖∇J(θ_n)‖² vs iterations and samples, mean with 95% bands.

``python -m paper_figs.fig_convergence --data runs/reproduce/convergence/data.json``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .common import color, figure_main, save


def plot(data: dict, out_dir: Path) -> list[Path]:
    curves, samples = data["curves"], np.asarray(data["samples"])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for i, (label, c) in enumerate(curves.items()):
        ls = ":" if label.endswith("same_raw_lr") else "-"
        col = color(label.replace("_same_raw_lr", ""), i)
        its = np.arange(len(c["J"]["mean"]))
        for ax, x, key in ((axes[0], its, "J"), (axes[1], samples, "J"), (axes[2], its, "grad_sq")):
            band = c[key]
            ax.plot(x, band["mean"], ls, color=col, label=label)
            ax.fill_between(x, band["lo"], band["hi"], color=col, alpha=0.15)
    axes[0].set_xlabel("iteration n (rollouts)")
    axes[1].set_xlabel("responses sampled per run")
    axes[2].set_xlabel("iteration n")
    axes[0].set_ylabel("exact J(θ_n)")
    axes[1].set_ylabel("exact J(θ_n)")
    axes[2].set_ylabel("exact ‖∇J(θ_n)‖²")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    n = len(curves["grpo"]["J_runs"][0])
    fig.suptitle(f"Exp. 4 — convergence, mean ± 95% band over {n} seeds (same effective step "
                 "η/κ for every method; dotted: TIC-GRPO at GRPO's raw η)")  # fmt: skip
    return save(fig, out_dir, "fig_convergence")


def main(argv: list[str] | None = None) -> int:
    return figure_main(plot, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
