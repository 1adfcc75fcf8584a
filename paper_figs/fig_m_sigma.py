"""Claim 2: how S responds when σ² (length spread) and M_n (a rare token) are dialled.

``python -m paper_figs.fig_m_sigma --data runs/reproduce/m_sigma/data.json``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .common import color, figure_main, label, save

METHODS = ("grpo", "grpo2", "tic_grpo")
TITLES = {"sigma": "σ² dial: lengths T/2 ± d (T = 8)", "M": "M_n dial: rare-token logit offset −β"}
XLABELS = {"sigma": "d (σ² = d² at the start)", "M": "β (π(rare) ≈ e^{−β}/2)"}


def plot(data: dict, out_dir: Path) -> list[Path]:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, (dial, values) in zip(axes, data["dials"].items()):
        per = data["per_value"][dial]
        vc = str(data["verdict_c"])
        for j, m in enumerate(METHODS):
            s = np.array([per[str(v)]["runs"][vc][m]["S"] for v in values])  # [values, seeds]
            rel = s / s[0]
            mean = rel.mean(axis=1)
            se = rel.std(axis=1, ddof=1) / np.sqrt(rel.shape[1])
            x = np.asarray(values, float) + (j - 1) * 0.04 * (values[-1] - values[0])
            ax.errorbar(x, mean, yerr=1.96 * se, marker="o", capsize=3, color=color(m),
                        label=label(m))  # fmt: skip
        ms = [np.mean(per[str(v)]["runs"][vc]["grpo"]["M2sigma2"]) for v in values]
        for v, q in zip(values, ms):
            ax.annotate(f"M²σ²≈{q:.3g}", (v, 1), textcoords="offset points", xytext=(0, -14),
                        fontsize=6, ha="center", color="0.4")  # fmt: skip
        ax.axhline(1, color="0.5", lw=0.8)
        ax.set_title(TITLES[dial])
        ax.set_xlabel(XLABELS[dial])
        ax.set_ylabel("S / S(first dial value), per seed")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Thm 4.1 vs 4.2–4.3 at η = {data['verdict_c']}/(√N log|V|): S vs σ² and M_n (± 95% over "
                 f"{len(data['seeds'])} seeds; grey: GRPO's measured mean M_n²σ_n²)")  # fmt: skip
    return save(fig, out_dir, "fig_m_sigma")


def main(argv: list[str] | None = None) -> int:
    return figure_main(plot, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
