"""Claim 4: Property 4.1, TIC-GRPO's second-moment bound and GRPO₂'s token-wise second moment.

``python -m paper_figs.fig_mechanisms --data runs/reproduce/mechanisms/data.json``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .common import color, figure_main, save


def plot(data: dict, out_dir: Path) -> list[Path]:
    rows, ts = data["rows"], data["horizons"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for t in ts:
        sel = [r for r in rows if r["T"] == t and r["delta"] != data["delta_fix"]]
        axes[0].scatter([t] * len(sel), [max(r["mg_rel_diff"], 1e-18) for r in sel], s=8,
                        color="C0", alpha=0.5)  # fmt: skip
        axes[0].scatter([t] * len(sel), [r["mg_cross_rel"] for r in sel], s=8, color="C3",
                        alpha=0.5)  # fmt: skip
    axes[0].scatter([], [], color="C0", label="|LHS − RHS| / RHS (identity)")
    axes[0].scatter([], [], color="C3", label="E|cross terms| / RHS (what cancels)")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("T")
    axes[0].set_title("Property 4.1, exact (float64)")
    axes[0].legend(fontsize=7)
    deltas = sorted({r["delta"] for r in rows if r["delta"] != data["delta_fix"]})
    for i, t in enumerate(ts):
        mean = [np.mean([r["ratio_tic"] for r in rows if r["T"] == t and r["delta"] == d])
                for d in deltas]  # fmt: skip
        worst = [max(r["ratio_tic"] for r in rows if r["T"] == t and r["delta"] == d)
                 for d in deltas]  # fmt: skip
        axes[1].plot(deltas, worst, "o-", color=f"C{i}", label=f"T={t}: max over seeds")
        axes[1].plot(deltas, mean, ":", color=f"C{i}")
    axes[1].axhline(1.0, color="k", lw=1)
    axes[1].text(deltas[0], 1.02, "bound", fontsize=8)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("‖θ_k − θ_old‖")
    axes[1].set_ylabel("Q_TIC / ((1+ε) E_θk‖∇log P_θk‖²)")
    axes[1].set_title(f"TIC-GRPO's bound (ε={data['eps_high']}; dotted: mean)")
    axes[1].legend(fontsize=7)
    fix = [r for r in rows if r["delta"] == data["delta_fix"]]
    for key, name, col in (("Q_grpo2", "GRPO₂ token-wise Q₂", color("grpo2")),
                           ("Q_tic", "TIC-GRPO Q", color("tic_grpo"))):  # fmt: skip
        vals = np.array([[r[key] / r["bound_tic"] for r in fix if r["T"] == t] for t in ts])
        se = vals.std(axis=1, ddof=1) / np.sqrt(vals.shape[1])
        axes[2].errorbar(ts, vals.mean(axis=1), yerr=1.96 * se, marker="o", capsize=3, color=col,
                         label=name)  # fmt: skip
    fit = data["fit_grpo2_over_bound"]
    axes[2].axhline(1.0, color="k", lw=1)
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("T")
    axes[2].set_ylabel("second moment / TIC's bound")
    axes[2].set_title(f"δ = {data['delta_fix']}: GRPO₂'s T-exponent {fit['slope']:+.2f} "
                      f"[{fit['ci'][0]:+.2f}, {fit['ci'][1]:+.2f}]")  # fmt: skip
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(
        f"v5 §4.4 mechanisms, exact by enumeration ({len(data['seeds'])} random θ_old per T)"
    )
    return save(fig, out_dir, "fig_mechanisms")


def main(argv: list[str] | None = None) -> int:
    return figure_main(plot, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
