"""Figure 6: refresh frequency K; exact clip bias by ratio level × clip × ε; training by clip.

``python -m paper_figs.fig_refresh_clip --data runs/reproduce/refresh_clip/data.json``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .common import color, figure_main, save


def plot(data: dict, out_dir: Path) -> list[Path]:
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for method in dict.fromkeys(r["method"] for r in data["refresh"]):
        sel = [r for r in data["refresh"] if r["method"] == method]
        k = [r["K"] for r in sel]
        m = np.array([r["mean_J"] for r in sel])
        err = np.array([[r["mean_J"] - r["lo"] for r in sel], [r["hi"] - r["mean_J"] for r in sel]])
        axes[0].errorbar(k, m, yerr=err, fmt="-o", capsize=3, color=color(method), label=method)
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("K inner steps per rollout")
    axes[0].set_ylabel("mean exact J over training (95% CI)")
    axes[0].set_title(f"refresh frequency ({data['iterations']} rollouts, same η_eff)")
    rows = [
        r for r in data["clip_bias"] if r["delta"] == max(x["delta"] for x in data["clip_bias"])
    ]
    labels = [f"{r['ratio']}\n{r['clip']}" + (f" ε={r['eps']}" if r["clip"] != "none" else "")
              for r in rows]  # fmt: skip
    colors = {"token": "C3", "seq_mean": "C4", "traj_sum": "C0"}
    axes[1].barh(range(len(rows)), [max(r["rel_bias"], 1e-17) for r in rows],
                 color=[colors[r["ratio"]] for r in rows])  # fmt: skip
    axes[1].set_yticks(range(len(rows)), labels, fontsize=5)
    axes[1].set_xscale("log")
    axes[1].set_xlabel(f"exact rel. bias vs ∇J(θ) at ‖θ−θ_old‖ = {rows[0]['delta']}")
    axes[1].set_title("clip × ratio level × ε (traj_sum/none: round-off)")
    tr = data["clip_train"]
    axes[2].bar(range(len(tr)), [r["mean_J"] for r in tr],
                yerr=[[r["mean_J"] - r["lo"] for r in tr], [r["hi"] - r["mean_J"] for r in tr]],
                color=[colors[r["ratio"]] for r in tr], capsize=3)  # fmt: skip
    axes[2].set_xticks(range(len(tr)), [f"{r['ratio']}\n{r['clip']}" for r in tr], fontsize=6)
    axes[2].set_ylabel("mean exact J over training (95% CI)")
    axes[2].set_title("training, ε = 0.2, K = 8")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Exp. 6 — refresh frequency and clip configurations")
    return save(fig, out_dir, "fig_refresh_clip")


def main(argv: list[str] | None = None) -> int:
    return figure_main(plot, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
