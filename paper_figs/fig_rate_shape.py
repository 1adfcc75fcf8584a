"""Figure 5: stationarity (1/N)Σ‖∇J(θ_n)‖² vs N, ηK and G, with the fitted rate form.

``python -m paper_figs.fig_rate_shape --data runs/reproduce/rate_shape/data.json``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .common import color, figure_main, save


def _pred(f, eta, k, n, g):
    return f["a"] / (eta * k * n) + f["b"] * eta * k + f["c"] / g


def plot(data: dict, out_dir: Path) -> list[Path]:
    pts, fits = data["points"], data["fits"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for method in fits:
        sel = [p for p in pts if p["method"] == method]
        col, f = color(method), fits[method]
        s = np.array([p["S"] for p in sel])
        pred = np.array([_pred(f, p["eta"], p["K"], p["N"], p["G"]) for p in sel])
        axes[0].loglog(pred, s, "o", ms=3, color=col,
                       label=f"{method}: a={f['a']:.2g}, b={f['b']:.2g}, c={f['c']:.2g}, "
                       f"rel.RMSE={f['rel_rmse']:.2f}")  # fmt: skip
        base = [p for p in sel if p["G"] == 8 and p["K"] == 4]
        for eta in sorted({p["eta"] for p in base}):
            row = sorted((p for p in base if p["eta"] == eta), key=lambda p: p["N"])
            axes[1].loglog([p["N"] for p in row], [p["S"] for p in row], "-o", ms=3, color=col,
                           alpha=0.4 + 0.6 * eta / max(p["eta"] for p in base))  # fmt: skip
        n_max = max(p["N"] for p in sel)
        for g in sorted({p["G"] for p in sel if p["K"] == 4}):
            row = [p for p in sel if p["K"] == 4 and p["G"] == g and p["N"] == n_max]
            row.sort(key=lambda p: p["eta"])
            axes[2].loglog([p["eta"] * 4 for p in row], [p["S"] for p in row], "-o", ms=3,
                           color=col, alpha=0.3 + 0.7 * np.log2(g) / 6,
                           label=f"{method}, G={g}")  # fmt: skip
    lim = axes[0].get_xlim()
    axes[0].plot(lim, lim, "k:", lw=1)
    axes[0].set_xlabel("fitted a/(ηKN) + b·ηK + c/G")
    axes[0].set_ylabel("measured (1/N) Σ ‖∇J(θ_n)‖²")
    axes[0].set_title("fit quality (dotted: y = x)")
    axes[1].set_xlabel("N (iterations averaged)")
    axes[1].set_ylabel("(1/N) Σ ‖∇J(θ_n)‖²")
    axes[1].set_title("vs N (K=4, G=8; darker = larger η)")
    axes[2].set_xlabel("η·K (K=4)")
    axes[2].set_title("vs ηK at the largest N, by G")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=6)
    fig.suptitle("Exp. 5 — rate shape: average squared gradient norm (exact) and the form "
                 "a/(ηKN) + b·ηK + c/G")  # fmt: skip
    return save(fig, out_dir, "fig_rate_shape")


def main(argv: list[str] | None = None) -> int:
    return figure_main(plot, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
