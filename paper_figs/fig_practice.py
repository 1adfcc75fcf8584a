"""Claim 6: v5 Table 2 and Fig. 1 in miniature — η sweeps, curves at η*, best-vs-best on held-out seeds.

``python -m paper_figs.fig_practice --data runs/reproduce/practice/data.json``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .common import color, figure_main, label, save


def _ci(x):
    x = np.asarray(x, float)
    return x.mean(axis=-1), 1.96 * x.std(axis=-1, ddof=1) / np.sqrt(x.shape[-1])


def plot(data: dict, out_dir: Path) -> list[Path]:
    etas, held, k0 = np.asarray(data["etas"]), data["heldout"], 4
    rows = [r for r in data["rows"] if r["K"] == k0]
    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    for r in rows:
        v = r["variant"]
        sw = data["sweeps"][f"K={k0}/{v}"]
        m, h = _ci(np.asarray(sw["mean_J"])[:, held])
        axes[0].errorbar(
            etas, m, yerr=h, marker="o", ms=3, capsize=2, color=color(v), label=label(v)
        )
        axes[0].plot([r["eta_star"]], [r["heldout_mean_J"]], "*", ms=14, color=color(v), mec="k")
        curves = np.asarray(sw["curves"])  # [N+1, seeds, etas]
        best = int(np.argmin(np.abs(etas - r["eta_star"])))
        m, h = _ci(curves[:, held, best])
        its = np.arange(len(m))
        axes[1].plot(its, m, color=color(v), ls="--" if v == "no_is" else "-",
                     label=f"{label(v)} (η*={r['eta_star']:.3g})")  # fmt: skip
        axes[1].fill_between(its, m - h, m + h, color=color(v), alpha=0.12)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("step size η (each variant's own objective)")
    axes[0].set_ylabel("held-out mean exact J over training")
    axes[0].set_title("η sweep (★: η* chosen on the selection seeds)")
    axes[1].set_xlabel("rollout n")
    axes[1].set_ylabel("exact J(θ_n), held-out seeds")
    axes[1].set_title("training curves at each variant's η* (Fig. 1: GRPO vs no-IS)")
    order = sorted(rows, key=lambda r: r["heldout_mean_J"])
    y = np.arange(len(order))
    axes[2].barh(y, [r["heldout_mean_J"] - data["J0"] for r in order],
                 xerr=[[r["heldout_mean_J"] - r["lo"] for r in order],
                       [r["hi"] - r["heldout_mean_J"] for r in order]],
                 color=[color(r["variant"]) for r in order], capsize=3)  # fmt: skip
    axes[2].set_yticks(y, [f"{label(r['variant'])}" for r in order], fontsize=8)
    axes[2].set_xlabel(f"held-out mean J − J₀ (J₀ = {data['J0']:.3f}), 95% CI")
    axes[2].set_title("best vs best (Table 2 in miniature)")
    for ax in axes[:2]:
        ax.legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"Practice, K={k0}, N={data['iterations']}: η chosen on {len(data['select'])} "
                 f"seeds, scored on {len(held)} held-out seeds")  # fmt: skip
    return save(fig, out_dir, "fig_practice")


def main(argv: list[str] | None = None) -> int:
    return figure_main(plot, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
