"""Experiment 8: questions the source leaves open (SPEC section 6), answered by training runs.

(a) dense per-token rewards (return = their sum; the advantage is still per sequence);
(b) a KL penalty β·KL(π_θ‖π_init) (k3 estimator) for β ∈ {0, 0.02, 0.1};
(c) baselines at small G: std, mean, RLOO advantages for TIC-GRPO and GRPO at G = 2 and 4.
All at the same effective step η/κ, paired over seeds; the score is mean exact J over training.
"""

from __future__ import annotations

import numpy as np

from analysis.fits import mean_ci, paired_diff_ci
from analysis.report import positive_diff_claim
from paper_figs import fig_open_questions

from ..mdp import init_theta
from ..train import TrainConfig, train
from .common import Context, onpolicy_scale, save_json, train_mdp


def _auc(mdp, method, ctx, seeds, iters, **kw) -> np.ndarray:
    kappa = onpolicy_scale(mdp, init_theta(mdp, 0.5, seed=ctx.seed), method)
    cfg = TrainConfig(method=method, lr_scale=1 / kappa, iterations=iters, seeds=seeds,
                      lrs=(0.3,), **kw)  # fmt: skip
    out = train(mdp, cfg)
    return np.asarray(out["J"]).mean(axis=0), float(np.asarray(out["kl"])[-1].mean())


def run(ctx: Context) -> list[dict]:
    folder = ctx.folder("open")
    seeds = tuple(range(ctx.seed, ctx.seed + ctx.size(10, 24)))
    iters = ctx.size(40, 150)
    rows = []

    def add(question, setting, method, auc, kl=None):
        s = mean_ci(auc)
        rows.append({"question": question, "setting": setting, "method": method, "mean_J": s["mean"],
                     "lo": s["ci"][0], "hi": s["ci"][1], "final_kl": kl, "per_seed": auc.tolist()})  # fmt: skip

    dense = train_mdp(ctx.seed, reward="dense")
    for method in ("grpo", "tic_grpo"):
        add("dense rewards", "dense", method, _auc(dense, method, ctx, seeds, iters)[0])
    binary = train_mdp(ctx.seed)
    for beta in (0.0, 0.02, 0.1):
        for method in ("grpo", "tic_grpo"):
            auc, kl = _auc(binary, method, ctx, seeds, iters, beta=beta)
            add("KL penalty", f"β={beta}", method, auc, kl)
    for g in (2, 4):
        for mode in ("std", "mean", "rloo"):
            for method in ("grpo", "tic_grpo"):
                auc = _auc(binary, method, ctx, seeds, iters, group_size=g, adv_mode=mode)[0]
                add("baselines at small G", f"G={g} {mode}", method, auc)
    ctx.log(f"open: dense, KL, small-G baselines ({len(seeds)} seeds x {iters} its each)")
    data = {"rows": rows, "iterations": iters, "seeds": list(seeds)}
    save_json(folder / "data.json", data)
    fig_open_questions.plot(data, folder)

    def per_seed(setting, method):
        return next(
            r["per_seed"] for r in rows if r["setting"] == setting and r["method"] == method
        )

    d_dense = paired_diff_ci(per_seed("dense", "tic_grpo"), per_seed("dense", "grpo"))
    d_kl = paired_diff_ci(per_seed("β=0.1", "tic_grpo"), per_seed("β=0.1", "grpo"))
    d_rloo = paired_diff_ci(per_seed("G=2 rloo", "tic_grpo"), per_seed("G=2 std", "tic_grpo"))
    return [
        positive_diff_claim(
            "dense_tic_advantage",
            "(open) TIC-GRPO beats GRPO with dense per-token rewards",
            "mean J: TIC − GRPO > 0 (CI above 0)",
            d_dense,
            experiment="8 open questions",
            detail="same effective step; the advantage is per sequence (return = token sum)",
        ),
        positive_diff_claim(
            "kl_tic_advantage",
            "(open) TIC-GRPO beats GRPO with a KL penalty β = 0.1",
            "mean J: TIC − GRPO > 0 (CI above 0)",
            d_kl,
            experiment="8 open questions",
            detail="k3 estimator to the initial policy; final KL per setting in data.json",
        ),
        positive_diff_claim(
            "rloo_small_g",
            "(open) At G = 2 RLOO advantages train TIC-GRPO better than std",
            "mean J: RLOO − std > 0 (CI above 0)",
            d_rloo,
            experiment="8 open questions",
            detail="RLOO is unbiased for ∇J (exp. 1/3); std rescales by 1/σ per prompt",
        ),
    ]
