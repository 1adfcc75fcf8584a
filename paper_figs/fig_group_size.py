"""Figure 3: bias (exact) and MSE (Monte Carlo, 95% bars) of the update vs group size G.

``python -m paper_figs.fig_group_size --data runs/reproduce/group_size/data.json``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .common import figure_main, save

FLOOR = 1e-17


def plot(data: dict, out_dir: Path) -> list[Path]:
    rows, fits = data["rows"], data["fits"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for i, mode in enumerate(dict.fromkeys(r["mode"] for r in rows)):
        sel = [r for r in rows if r["mode"] == mode]
        g = np.array([r["G"] for r in sel], float)
        fb, fm = fits[mode]["bias"], fits[mode]["mse"]
        lab_b = mode + (
            f": slope {fb['slope']:.2f}" if fb.get("slope") is not None else ": 0 (exact)"
        )
        axes[0].loglog(g, np.maximum([r["rel_bias"] for r in sel], FLOOR), "-o", ms=3,
                       color=f"C{i}", label=lab_b)  # fmt: skip
        mse = np.array([r["rel_mse"] for r in sel])
        se = np.array([r["rel_mse_se"] for r in sel])
        axes[1].errorbar(g, mse, yerr=1.96 * se, fmt="-o", ms=3, capsize=2, color=f"C{i}",
                         label=f"{mode}: slope {fm['slope']:.2f}")  # fmt: skip
    for ax in axes:
        g = np.array(sorted({r["G"] for r in rows}), float)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("group size G")
        ax.grid(alpha=0.3, which="both")
    ref = [r for r in rows if r["mode"] == "std"]
    axes[0].loglog(g, ref[-1]["rel_bias"] * g[-1] / g, "k:", lw=1, label="∝ 1/G")
    axes[1].loglog(g, ref[-1]["rel_mse"] * g[-1] / g, "k:", lw=1, label="∝ 1/G")
    axes[0].set_ylabel("‖E_G[g] − g_∞‖ / ‖g_∞‖  (exact)")
    axes[0].set_title("bias vs the G → ∞ limit (RLOO: zero up to round-off)")
    axes[1].set_ylabel("E‖g − g_∞‖² / ‖g_∞‖²  (MC, 95% bars)")
    axes[1].set_title("sampling error of one batch (variance + bias²); slopes fit on G ≥ 8")
    for ax in axes:
        ax.legend(fontsize=8)
    m = data["mdp"]
    fig.suptitle(f"Group size at θ = θ_old (V={m['vocab']}, T={m['horizon']}, "
                 f"P={m['num_prompts']}, binary reward)")  # fmt: skip
    return save(fig, out_dir, "fig_group_size")


def main(argv: list[str] | None = None) -> int:
    return figure_main(plot, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
