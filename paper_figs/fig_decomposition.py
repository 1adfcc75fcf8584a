"""Claim 5: exact size of each error term of GRPO, GRPO₂ and TIC-GRPO, and where GRPO's update sits.

``python -m paper_figs.fig_decomposition --data runs/reproduce/decomposition/data.json``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .common import color, figure_main, label, save

FLOOR = 1e-3  # terms that are zero up to round-off are drawn here


def plot(data: dict, out_dir: Path) -> list[Path]:
    rows = data["rows"]
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.8))
    for ax, name in zip(axes, ("grpo", "grpo2", "tic_grpo")):
        sel = [r for r in rows if r["method"] == name]
        d = np.array([r["distance"] for r in sel])
        for i, step in enumerate(data["steps"][name]):
            y = np.array([r[f"term:{step}"] for r in sel])
            zero = y < 1e-12
            ax.scatter(d[~zero], y[~zero], s=10, color=f"C{i}", label=step)
            if zero.any():
                ax.scatter(d[zero], np.full(zero.sum(), FLOOR), s=14, marker="v", color=f"C{i}",
                           label=f"{step}: 0 up to round-off (drawn at the floor)")  # fmt: skip
        onset = data["clip_onset_distance"].get(name)
        if onset:
            ax.axvline(onset, color="k", ls=":", lw=1)
            ax.text(onset, FLOOR * 1.3, " clip starts", fontsize=7)
        ax.set_ylim(FLOOR / 1.5, 10)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("‖θ_k − θ_old‖ (real inner loops)")
        ax.set_ylabel("‖term‖ / ‖leading term‖ (exact)")
        ax.set_title(f"{label(name)}: terms in order of switching on")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3, which="both")
    ax = axes[3]
    for name, style in (("grpo", dict(s=40, facecolors="none")), ("grpo2", dict(s=8)),
                        ("tic_grpo", dict(s=10))):  # fmt: skip
        sel = [r for r in rows if r["method"] == name]
        extra = " (same points as GRPO₂: one token-ratio step)" if name == "grpo" else ""
        ax.scatter([r["distance"] for r in sel], [r["lambda"] for r in sel],
                   edgecolors=color(name), color=color(name) if "facecolors" not in style else None,
                   label=label(name) + " staleness-only step" + extra, **style)  # fmt: skip
    ax.axhline(0, color="k", lw=1)
    ax.axhline(1, color="k", lw=1)
    ax.text(ax.get_xlim()[0], 0.03, " ∇J(θ_old)", fontsize=7)
    ax.text(ax.get_xlim()[0], 1.03, " ∇J(θ_k)", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("‖θ_k − θ_old‖")
    ax.set_ylabel("λ: projection on ∇J(θ_old) → ∇J(θ_k)")
    ax.set_ylim(-1.5, 2.5)
    ax.set_title("where each expected update sits")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle(f"Decompositions (v5 Eq. 7, 9, A.3), exact, G = {data['group_size']} group-mean "
                 "advantages, clips on; θ_k from GRPO inner loops")  # fmt: skip
    return save(fig, out_dir, "fig_decomposition")


def main(argv: list[str] | None = None) -> int:
    return figure_main(plot, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
