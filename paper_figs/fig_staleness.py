"""Figure 2: exact bias along real inner loops, against ‖θ − θ_old‖ and against η·k.

``python -m paper_figs.fig_staleness --data runs/reproduce/staleness/data.json``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .common import figure_main, save

FLOOR = 1e-17
ROUND_OFF = 1e-12  # float64 relative round-off scale of the exact bias


def plot(data: dict, out_dir: Path) -> list[Path]:
    rows, fits = data["rows"], data["fits"]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for i, v in enumerate(variants):
        sel = [r for r in rows if r["variant"] == v]
        d = np.array([r["distance"] for r in sel])
        b = np.maximum([r["bias_current"] for r in sel], FLOOR)
        fit = fits.get(v)
        # a power law describes a series only when none of its points sits at round-off (a
        # slope fitted across round-off points and clipped ones would be meaningless)
        onset = data.get("clip_onset")
        clipped = "ε=" in v and v.startswith("GRPO") and onset is not None
        if fit and (b.min() > ROUND_OFF or clipped):
            where = " below the clip's onset" if clipped else ""
            label = (f"{v}: slope{where} {fit['slope']:.2f} "
                     f"[{fit['ci'][0]:.2f}, {fit['ci'][1]:.2f}]")  # fmt: skip
        elif b.max() <= ROUND_OFF:
            label, fit = f"{v}: at round-off (max {b.max():.1e})", None
        else:
            label, fit = f"{v}: round-off, then up to {b.max():.1e} once the clip bites", None
        axes[0].loglog(d, b, "o", ms=2.5, alpha=0.5, color=f"C{i}", label=label)
        if fit:
            xs = np.geomspace(d.min(), onset if clipped else d.max(), 20)
            axes[0].loglog(xs, np.exp(fit["intercept"]) * xs ** fit["slope"], "-", color=f"C{i}")
        etas = sorted({r["eta_k"] for r in sel})
        med = [
            np.median([max(r["bias_current"], FLOOR) for r in sel if r["eta_k"] == e]) for e in etas
        ]
        axes[1].loglog(etas, med, "-o", ms=3, color=f"C{i}", label=v)
        med_old = [np.median([r["bias_old"] for r in sel if r["eta_k"] == e]) for e in etas]
        axes[2].loglog(etas, np.maximum(med_old, FLOOR), "-o", ms=3, color=f"C{i}", label=v)
    if data.get("clip_onset"):
        axes[0].axvline(data["clip_onset"], color="k", ls=":", lw=1)
        axes[0].text(data["clip_onset"], FLOOR * 10, " clip starts", fontsize=7)
    axes[0].set_xlabel("‖θ_k − θ_old‖")
    axes[0].set_ylabel("‖E_old[g(θ_k)]/κ − ∇J(θ_k)‖  (exact)")
    axes[0].set_title("bias vs distance (points: seeds × η × k; lines: fits)")
    axes[1].set_xlabel("η · k  (step size × inner steps taken)")
    axes[1].set_ylabel("median bias vs ∇J(θ_k)")
    axes[1].set_title("bias vs ηK")
    axes[2].set_xlabel("η · k")
    axes[2].set_ylabel("median ‖E_old[g(θ_k)]/κ − ∇J(θ_old)‖")
    axes[2].set_title("distance to the OLD gradient")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    fig.suptitle("Staleness: GRPO's bias grows with the inner-loop distance; TIC-GRPO unclipped "
                 "stays at round-off (drawn at 1e-17); CI: seed jackknife")  # fmt: skip
    return save(fig, out_dir, "fig_staleness")


def main(argv: list[str] | None = None) -> int:
    return figure_main(plot, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
