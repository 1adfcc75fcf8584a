"""Claim 1: stationarity S vs the length budget T for GRPO, GRPO₂, TIC-GRPO, with fitted exponents.

``python -m paper_figs.fig_hierarchy --data runs/reproduce/hierarchy_T/data.json``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .common import color, figure_main, label, save

METHODS = ("grpo", "grpo2", "tic_grpo")


def plot(data: dict, out_dir: Path) -> list[Path]:
    ts = np.asarray(data["horizons"], float)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    vc = str(data["verdict_c"])
    for m in METHODS:
        for c, ls in (("1", ":"), (vc, "-")):
            s = np.array([_run(data, t, c, m)["S"] for t in data["horizons"]])  # [T, seeds]
            s0 = np.array([_run(data, t, c, m)["S0"] for t in data["horizons"]])
            mean = s.mean(axis=1)
            se = s.std(axis=1, ddof=1) / np.sqrt(s.shape[1])
            fit = data["fits"][c][m]
            axes[0].errorbar(ts, mean, yerr=1.96 * se, marker="o", capsize=3, color=color(m),
                             ls=ls, label=f"{label(m)}, c={c}: slope {fit['slope']:.2f} "
                             f"[{fit['ci'][0]:.2f}, {fit['ci'][1]:.2f}]")  # fmt: skip
            axes[1].plot(ts, (s / s0).mean(axis=1), "o", ls=ls, color=color(m),
                         label=f"{label(m)}, c={c}")  # fmt: skip
        fit = data["fits"][vc][m]
        mids = [np.sqrt(x["x_lo"] * x["x_hi"]) for x in fit["local"]]
        lo = [x["slope"] - x["ci"][0] for x in fit["local"]]
        hi = [x["ci"][1] - x["slope"] for x in fit["local"]]
        axes[2].errorbar(mids, [x["slope"] for x in fit["local"]], yerr=[lo, hi], marker="o",
                         capsize=3, color=color(m), label=label(m))  # fmt: skip
    for m, b in data["bounds"].items():
        axes[2].axhline(b, color=color(m), ls=":", lw=1)
        axes[2].text(ts[0], b + 0.05, f"bound {label(m)}: T^{b:g}", fontsize=7, color=color(m))
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("length budget T")
    axes[0].set_ylabel("S = (1/N) Σ_n Σ_k ‖∇J(θ_{n,k})‖²  (exact ∇J)")
    axes[0].set_title("stationarity (mean ± 95% over seeds)")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("length budget T")
    axes[1].set_ylabel("S / (K‖∇J(θ_{1,0})‖²)")
    axes[1].set_title("S relative to not moving at all")
    axes[2].set_xscale("log")
    axes[2].set_xlabel("T (geometric midpoint of neighbouring budgets)")
    axes[2].set_ylabel("local exponent d log S / d log T")
    axes[2].set_title(f"local exponents at c={vc} (95% seed-jackknife CI) vs bounds")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    n = len(data["seeds"])
    fig.suptitle(f"Thm 4.1–4.3: S vs T at η = c/(√N log|V|) (dotted c=1: the theorems' η; solid "
                 f"c={vc}), N = {data['iterations']}, {n} seeds; bounds are upper bounds")  # fmt: skip
    return save(fig, out_dir, "fig_hierarchy")


def _run(data, t, c, m):
    return data["per_T"][str(t)]["runs"][c][m]


def main(argv: list[str] | None = None) -> int:
    return figure_main(plot, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
