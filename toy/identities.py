"""Exact second moments behind v5 §4.4, by enumeration on log-linear MDPs (float64).

- **Property 4.1** (martingale identity): ``E_θ‖∇log P_θ(s_T|c)‖² = E_θ Σ_t ‖∇log π_θ(a_t|s_{t−1})‖²``;
  the cross terms ``2 Σ_{i<j} ⟨score_i, score_j⟩`` vanish in expectation, not per sample.
- **TIC-GRPO's second-moment bound**:
  ``Q = E_old‖min(w', 1+ε) ∇log P_θk‖² ≤ (1+ε) E_θk‖∇log P_θk‖²`` (``w' = P_θk/P_old``), because
  ``min(w', c)² ≤ c·w'`` and ``w'`` changes the measure from ``P_old`` to ``P_θk``.
- **GRPO₂'s token-wise second moment** ``Q₂ = E_old‖Σ_t min(w_t, 1+ε) ∇log π_θk(a_t|s_{t−1})‖²``,
  for which the measure change fails token by token (no such bound; v5 pays extra powers of T).

Every function averages over prompts (``E_c`` uniform) and takes one ``θ [F, V]`` (not batched).
"""

from __future__ import annotations

import torch

from .loglinear import LogLinearMDP, score_tokens
from .mdp import response_probs, token_logp


def martingale_sides(theta: torch.Tensor, mdp: LogLinearMDP) -> dict:
    """``{"lhs": E‖Σ_t s_t‖², "rhs": E Σ_t ‖s_t‖², "abs_cross": E|Σ_{i≠j} ⟨s_i, s_j⟩|}`` (floats)."""
    score = score_tokens(theta, mdp)  # [P, M, T, D]
    probs = response_probs(theta, mdp)  # [P, M]
    traj = score.sum(dim=2)  # [P, M, D]
    lhs = (probs * (traj**2).sum(-1)).sum(-1).mean()
    per_token = (probs * (score**2).sum(dim=(-1, -2))).sum(-1).mean()
    cross = (traj**2).sum(-1) - (score**2).sum(dim=(-1, -2))  # [P, M]
    return {"lhs": float(lhs), "rhs": float(per_token),
            "abs_cross": float((probs * cross.abs()).sum(-1).mean())}  # fmt: skip


def second_moments(theta_k: torch.Tensor, theta_old: torch.Tensor, mdp: LogLinearMDP,
                   eps_high: float = 0.2) -> dict:  # fmt: skip
    """TIC's ``Q`` and its bound, GRPO₂'s ``Q₂``, at ``θ_k`` with samples from ``θ_old`` (floats).

    Keys: ``Q_tic``, ``bound_tic`` (``(1+ε) E_θk‖∇log P_θk‖²``), ``Q_grpo2``, ``ratio_tic``
    (``Q_tic / bound_tic``, ≤ 1 by the bound), ``clipped_frac`` (``P_old(w' > 1+ε)``).
    """
    score = score_tokens(theta_k, mdp)  # [P, M, T, D]
    p_old, p_k = response_probs(theta_old, mdp), response_probs(theta_k, mdp)  # [P, M]
    rho = token_logp(theta_k, mdp) - token_logp(theta_old, mdp)  # [P, M, T] (0 where masked)
    cap = 1.0 + eps_high
    w_traj = rho.sum(-1).exp()  # [P, M]
    traj_sq = (score.sum(dim=2) ** 2).sum(-1)  # [P, M]
    q_tic = (p_old * w_traj.clamp(max=cap) ** 2 * traj_sq).sum(-1).mean()
    bound = cap * (p_k * traj_sq).sum(-1).mean()
    w_tok = torch.where(mdp.mask, rho.exp().clamp(max=cap), 0.0)  # [P, M, T]
    tok_sum = (w_tok[..., None] * score).sum(dim=2)  # [P, M, D]
    q_grpo2 = (p_old * (tok_sum**2).sum(-1)).sum(-1).mean()
    return {"Q_tic": float(q_tic), "bound_tic": float(bound), "Q_grpo2": float(q_grpo2),
            "ratio_tic": float(q_tic / bound),
            "clipped_frac": float((p_old * (w_traj > cap)).sum(-1).mean())}  # fmt: skip
