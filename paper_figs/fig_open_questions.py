"""Figure 8: open questions — dense rewards, KL penalty, baselines at small G (mean J, 95% CI).

``python -m paper_figs.fig_open_questions --data runs/reproduce/open/data.json``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .common import color, figure_main, save


def plot(data: dict, out_dir: Path) -> list[Path]:
    rows = data["rows"]
    questions = list(dict.fromkeys(r["question"] for r in rows))
    fig, axes = plt.subplots(1, len(questions), figsize=(5 * len(questions) + 2, 4.6),
                             gridspec_kw={"width_ratios": [1, 2, 4][: len(questions)]})  # fmt: skip
    for ax, q in zip(axes, questions):
        sel = [r for r in rows if r["question"] == q]
        settings = list(dict.fromkeys(r["setting"] for r in sel))
        for j, method in enumerate(("grpo", "tic_grpo")):
            pts = [
                next(r for r in sel if r["setting"] == s and r["method"] == method)
                for s in settings
            ]
            xs = [i + (j - 0.5) * 0.35 for i in range(len(settings))]
            ax.bar(xs, [p["mean_J"] for p in pts], width=0.35, color=color(method), label=method,
                   yerr=[[p["mean_J"] - p["lo"] for p in pts], [p["hi"] - p["mean_J"] for p in pts]],
                   capsize=3)  # fmt: skip
        ax.set_xticks(range(len(settings)), settings, fontsize=7)
        ax.set_title(q)
        ax.set_ylabel("mean exact J over training (95% CI)")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Exp. 8 — open questions ({len(data['seeds'])} seeds × {data['iterations']} "
                 "rollouts, same effective step)")  # fmt: skip
    return save(fig, out_dir, "fig_open_questions")


def main(argv: list[str] | None = None) -> int:
    return figure_main(plot, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
