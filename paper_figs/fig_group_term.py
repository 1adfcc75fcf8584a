"""Claim 3: the group-mean error term E‖Y₁/κ‖² vs group size G and length budget T.

``python -m paper_figs.fig_group_term --data runs/reproduce/group_term/data.json``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .common import color, figure_main, label, save

METHODS = ("grpo", "grpo2", "tic_grpo")


def plot(data: dict, out_dir: Path) -> list[Path]:
    rows = data["rows"]
    t_max, g_ref = max(data["horizons"]), 8
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for j, m in enumerate(METHODS):
        sel = [r for r in rows if r["method"] == m and r["T"] == t_max]
        fg = data["fits_G"][f"{m}/T={t_max}"]
        axes[0].errorbar([r["G"] * (1 + 0.04 * (j - 1)) for r in sel], [r["Y1_sq"] for r in sel],
                         yerr=[1.96 * r["se"] for r in sel], marker="o", capsize=3, color=color(m),
                         label=f"{label(m)}: slope {fg['slope']:.2f}")  # fmt: skip
        sel = [r for r in rows if r["method"] == m and r["G"] == g_ref]
        ft = data["fits_T"][f"{m}/G={g_ref}"]
        axes[1].errorbar([r["T"] * (1 + 0.03 * (j - 1)) for r in sel], [r["Y1_sq"] for r in sel],
                         yerr=[1.96 * r["se"] for r in sel], marker="o", capsize=3, color=color(m),
                         label=f"{label(m)}: slope {ft['slope']:.2f} "
                         f"[{ft['ci'][0]:.2f}, {ft['ci'][1]:.2f}]")  # fmt: skip
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        ax.set_ylabel("E‖Y₁/κ‖²  (group-mean error, on-policy)")
    axes[0].set_xlabel("group size |G|")
    axes[0].set_title(f"vs |G| at T = {t_max} (bounds allow 1/|G|; dotted: ∝ 1/|G|²)")
    g = np.asarray(data["sizes"], float)
    ref = [r["Y1_sq"] for r in rows if r["method"] == "tic_grpo" and r["T"] == t_max][0]
    axes[0].plot(g, ref * (g[0] / g) ** 2, ":", color="k", lw=1)
    axes[1].set_xlabel("length budget T")
    axes[1].set_title(f"vs T at |G| = {g_ref} (bounds: T² GRPO, GRPO₂; T TIC)")
    fig.suptitle(f"Group term, Monte Carlo ({data['batches']} batches per point, 95% CI from "
                 "10 blocks); κ: 1/T (GRPO₂, TIC), 1/mean length (GRPO)")  # fmt: skip
    return save(fig, out_dir, "fig_group_term")


def main(argv: list[str] | None = None) -> int:
    return figure_main(plot, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
