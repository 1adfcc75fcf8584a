"""Figure 7: trajectory-weight ESS vs T (exact and MC), and where the direct product breaks.

``python -m paper_figs.fig_length --data runs/reproduce/length/data.json``.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt

from .common import figure_main, save


def plot(data: dict, out_dir: Path) -> list[Path]:
    rows = data["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    floor = -40.0  # log10 ESS fraction below this is drawn at the floor (values in data.json)
    for i, sigma in enumerate(dict.fromkeys(r["sigma"] for r in rows)):
        sel = [r for r in rows if r["sigma"] == sigma]
        t = [r["T"] for r in sel]
        exact = [max(-r["log_E_w2"] / math.log(10), floor) for r in sel]
        axes[0].semilogx(t, exact, "-", color=f"C{i}", label=f"σ={sigma}: exact 1/E[w'²]")
        mc = [math.log10(max(r["ess_frac_mc"], 1 / data["samples"])) for r in sel]
        axes[0].semilogx(t, mc, "o", color=f"C{i}", ms=4,
                         label=f"σ={sigma}: Monte Carlo ESS/n (floor 1/n)")  # fmt: skip
        axes[1].semilogx(t, [r["capped_frac"] for r in sel], "-o", ms=4, color=f"C{i}",
                         label=f"σ={sigma}: Σ_t ρ_t > cap (policy_loss)")  # fmt: skip
        axes[1].semilogx(t, [r["direct_inf_frac"] for r in sel], ":", color=f"C{i}",
                         label=f"σ={sigma}: float32 Π exp(ρ_t) = inf")  # fmt: skip
    axes[0].axhline(math.log10(1 / data["samples"]), color="0.5", lw=0.8, ls="--")
    axes[0].set_ylim(floor - 1, 1)
    axes[0].set_xlabel("response length T")
    axes[0].set_ylabel("log₁₀ effective-sample-size fraction")
    axes[0].set_title(f"trajectory weight w' = P_θ/P_old (curves end at {floor:g})")
    axes[1].set_xlabel("response length T")
    axes[1].set_ylabel("fraction of responses drawn from π_θ")
    axes[1].set_title("how often the log-ratio cap binds (solid) vs float32 overflow (dotted)")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    fig.suptitle(f"Length (Markov policy, V={data['vocab']}; σ = per-entry logit perturbation "
                 "of θ vs θ_old)")  # fmt: skip
    return save(fig, out_dir, "fig_length")


def main(argv: list[str] | None = None) -> int:
    return figure_main(plot, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
