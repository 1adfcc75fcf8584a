"""Figure 7: trajectory-weight ESS vs T (exact and MC), and where the direct product breaks.

``python -m paper_figs.fig_length --data runs/reproduce/length/data.json``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .common import figure_main, save


def plot(data: dict, out_dir: Path) -> list[Path]:
    rows = data["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for i, sigma in enumerate(dict.fromkeys(r["sigma"] for r in rows)):
        sel = [r for r in rows if r["sigma"] == sigma]
        t = [r["T"] for r in sel]
        axes[0].loglog(t, [r["ess_frac_exact"] for r in sel], "-", color=f"C{i}",
                       label=f"σ={sigma}: exact 1/E[w'²]")  # fmt: skip
        axes[0].loglog(t, [max(r["ess_frac_mc"], 1 / data["samples"]) for r in sel], "o",
                       color=f"C{i}", ms=4, label=f"σ={sigma}: MC ESS/n (n={data['samples']})")  # fmt: skip
        axes[1].semilogx(t, [r["direct_inf_frac"] for r in sel], "-o", ms=3, color=f"C{i}",
                         label=f"σ={sigma}: Π exp(ρ_t) = inf")  # fmt: skip
        axes[1].semilogx(t, [r["naive_nan_frac"] for r in sel], "--", color=f"C{i}",
                         label=f"σ={sigma}: inf·0 = NaN")  # fmt: skip
        axes[1].semilogx(t, [r["log_space_nonfinite_frac"] for r in sel], ":", color=f"C{i}",
                         label=f"σ={sigma}: log space non-finite")  # fmt: skip
    axes[0].set_xlabel("response length T")
    axes[0].set_ylabel("effective sample size fraction")
    axes[0].set_title("trajectory weight w' = P_θ/P_old: ESS collapses with T")
    axes[1].set_xlabel("response length T")
    axes[1].set_ylabel("fraction of sampled responses (float32)")
    axes[1].set_title("direct product vs log space (policy_loss: always finite)")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    fig.suptitle(f"Exp. 7 — length (Markov policy, V={data['vocab']}; σ = logit perturbation "
                 "of θ vs θ_old per entry)")  # fmt: skip
    return save(fig, out_dir, "fig_length")


def main(argv: list[str] | None = None) -> int:
    return figure_main(plot, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
