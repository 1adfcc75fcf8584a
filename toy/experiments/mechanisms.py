"""v5 §4.4's exact mechanisms on enumerated log-linear MDPs (no sampling, float64).

- Property 4.1 at random θ for every T: ``E‖∇log P‖²`` vs ``E Σ_t ‖∇log π_t‖²``, beside the size
  of the cross terms it cancels (so the identity is not trivially 0 = 0).
- TIC-GRPO's bound ``Q ≤ (1+ε) E_θk‖∇log P_θk‖²`` at ``θ_k = θ_old + δ·u`` (u a random unit
  direction), δ from 0.01 to 3 (the clip binds at large δ), every T and seed.
- GRPO₂'s token-wise ``Q₂`` over the same bound, as T grows (fixed δ): its exponent in T.
"""

from __future__ import annotations

import numpy as np

from analysis.fits import fit_exponent
from analysis.report import make_claim
from paper_figs import fig_mechanisms

from ..identities import martingale_sides, second_moments
from ..loglinear import make_loglinear_mdp
from ..mdp import init_theta
from .common import Context, save_csv, save_json

EPS = 0.2


def run(ctx: Context) -> list[dict]:
    folder = ctx.folder("mechanisms")
    horizons = ctx.size([2, 3, 4, 6, 8], [2, 3, 4, 5, 6, 8, 10])
    seeds = list(range(ctx.seed, ctx.seed + ctx.size(8, 20)))
    deltas = list(np.geomspace(0.01, 3.0, ctx.size(7, 13)))
    delta_fix = 1.0
    rows = []
    for t in horizons:
        mdp = make_loglinear_mdp(vocab=3, horizon=t, stop="hazard", seed=ctx.seed)
        for s in seeds:
            theta_old = init_theta(mdp, 0.5, seed=s)
            u = init_theta(mdp, 1.0, seed=10_000 + s)
            u = u / u.norm()
            mg = martingale_sides(theta_old, mdp)
            for d in [*deltas, delta_fix]:
                sm = second_moments(theta_old + d * u, theta_old, mdp, EPS)
                rows.append({"T": t, "seed": s, "delta": float(d), **sm,
                             "mg_rel_diff": abs(mg["lhs"] - mg["rhs"]) / mg["rhs"],
                             "mg_cross_rel": mg["abs_cross"] / mg["rhs"]})  # fmt: skip
    ctx.log(f"mechanisms: T ∈ {horizons}, {len(seeds)} seeds, {len(deltas)} distances (exact)")
    fix = [r for r in rows if r["delta"] == delta_fix]
    ratio = np.array(
        [[r["Q_grpo2"] / r["bound_tic"] for r in fix if r["T"] == t] for t in horizons]
    ).T
    tic = np.array([[r["Q_tic"] / r["bound_tic"] for r in fix if r["T"] == t] for t in horizons]).T
    fit_g2 = fit_exponent(horizons, ratio)
    fit_tic = fit_exponent(horizons, tic)
    data = {"rows": rows, "horizons": horizons, "seeds": seeds, "deltas": deltas,
            "delta_fix": delta_fix, "eps_high": EPS, "fit_grpo2_over_bound": fit_g2,
            "fit_tic_over_bound": fit_tic}  # fmt: skip
    save_json(folder / "data.json", data)
    save_csv(folder / "data.csv", rows)
    fig_mechanisms.plot(data, folder)
    mg_max = max(r["mg_rel_diff"] for r in rows)
    cross = min(r["mg_cross_rel"] for r in rows)
    worst = max(rows, key=lambda r: r["ratio_tic"])
    clipped = max(r["clipped_frac"] for r in rows)
    where = f"log-linear MDP, V=3, stop hazard, T ∈ {horizons}, {len(seeds)} random θ per T"
    return [
        make_claim(
            "martingale_identity",
            "Property 4.1: E‖∇log P_θ(s_T)‖² = E Σ_t ‖∇log π_θ(a_t|s_{t−1})‖² (the score "
            "increments are martingale differences)",
            "max relative difference < 1e-10 (exact)",
            mg_max,
            None,
            mg_max < 1e-10,
            experiment="mechanisms",
            detail=f"{where}; the cross terms it cancels are not small per sample: "
            f"E|Σ_(i≠j)⟨s_i, s_j⟩| ≥ {cross:.2g} × E Σ_t‖s_t‖² in every case",
        ),
        make_claim(
            "tic_second_moment_bound",
            "TIC-GRPO's second moment (v5 §4.4): E_old‖min(w', 1+ε)∇log P_θk‖² ≤ "
            "(1+ε) E_θk‖∇log P_θk‖²",
            "max of Q / bound ≤ 1 (exact; ε = 0.2)",
            worst["ratio_tic"],
            None,
            worst["ratio_tic"] <= 1 + 1e-12,
            experiment="mechanisms",
            detail=f"{where}, θ_k = θ_old + δu, δ ∈ [0.01, 3] ({len(deltas)} values); the largest "
            f"ratio at T={worst['T']}, δ={worst['delta']:.3g}; up to {clipped:.0%} of P_old's mass "
            f"has w' > 1+ε (the clip binds). Q/bound's T-exponent at δ={delta_fix}: "
            f"{fit_tic['slope']:+.2f} [{fit_tic['ci'][0]:+.2f}, {fit_tic['ci'][1]:+.2f}]",
        ),
        make_claim(
            "grpo2_token_second_moment_T",
            "GRPO₂'s token-wise second moment has no such bound and grows with T relative to "
            "TIC's bound (v5 §4.4: token-wise clipping breaks the martingale structure)",
            "T-exponent of Q₂ / ((1+ε) E_θk‖∇log P_θk‖²) > 0 (CI above 0)",
            fit_g2["slope"],
            fit_g2["ci"],
            fit_g2["ci"][0] > 0,
            experiment="mechanisms",
            detail=f"δ = ‖θ_k − θ_old‖ = {delta_fix}, {where} (CI: seed jackknife); local "
            "slopes "
            + ", ".join(f"{x['slope']:+.2f}" for x in fit_g2["local"])
            + f"; Q₂/bound at T={horizons[-1]}: {ratio[:, -1].mean():.3g} "
            f"(TIC's Q/bound there: {tic[:, -1].mean():.3g})",
        ),
    ]
