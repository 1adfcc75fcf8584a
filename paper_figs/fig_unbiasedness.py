"""Figure 1: exact relative error of each method's expected update as θ leaves θ_old.

Left: against the gradient at the current θ (what an update should follow); right: against the
gradient at θ_old (what GRPO estimates). ``python -m paper_figs.fig_unbiasedness --data
runs/reproduce/unbiased/data.json``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .common import figure_main, save

FLOOR = 1e-17  # exact zeros drawn on the axis floor
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")


def plot(data: dict, out_dir: Path) -> list[Path]:
    rows = data["rows"]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, key, title in (
        (axes[0], "rel_err_current", "vs ∇J(θ)  (current policy)"),
        (axes[1], "rel_err_old", "vs ∇J(θ_old)  (sampling policy)"),
    ):
        for i, v in enumerate(variants):
            sel = [r for r in rows if r["variant"] == v and r["delta"] > 0]
            style = "-" if "TIC" in v else ("--" if "GRPO" in v or "GSPO" in v else ":")
            # curves that coincide (several sit at round-off) get distinct markers and sizes,
            # so every legend entry can be found on the plot
            ax.loglog([r["delta"] for r in sel], [max(r[key], FLOOR) for r in sel], style,
                      marker=MARKERS[i % len(MARKERS)], ms=9 - 0.6 * i, mfc="none", lw=1.2,
                      color=f"C{i}", label=v)  # fmt: skip
        ax.axhline(1e-8, color="k", lw=0.6, ls=":")
        ax.set_xlabel("‖θ − θ_old‖  (along a fixed random direction)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("‖E_old[g(θ)]/κ − ∇J‖ / ‖∇J‖  (exact)")
    axes[0].text(0.02, 0.5, "curves near 1e-15: zero up to float64 round-off (they overlap;\n"
                 "hollow markers of different shapes and sizes tell them apart)\n"
                 "dotted line: the 1e-8 tolerance of the tests", transform=axes[0].transAxes, fontsize=7)  # fmt: skip
    axes[1].legend(fontsize=7, loc="lower right")
    m = data["mdp"]
    fig.suptitle(f"Leading terms — exact bias, G=1 unless stated (V={m['vocab']}, T={m['horizon']}, "
                 f"P={m['num_prompts']}, {m['reward']} reward)")  # fmt: skip
    return save(fig, out_dir, "fig_unbiasedness")


def main(argv: list[str] | None = None) -> int:
    return figure_main(plot, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
