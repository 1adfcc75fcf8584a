"""Importance-ratio levels, all formed in log space (SPEC section 3).

``ρ_{i,t} = log π_θ(a_{i,t}|·) − log π_old(a_{i,t}|·)``, zero where masked. Each level returns a
log-ratio broadcast to ``[N, T]`` so that every surrogate and aggregation works on one shape.

| level      | log-ratio per token                    | method        |
|------------|----------------------------------------|---------------|
| `token`    | ρ_{i,t}                                | GRPO, DAPO, Dr. GRPO |
| `seq_mean` | (1/L_i) Σ_t ρ_{i,t}                    | GSPO          |
| `traj_sum` | Σ_t ρ_{i,t} = log P_θ(s_T)/P_old(s_T)  | TIC-GRPO      |
| `self`     | log π_θ − stopgrad(log π_θ) (value 0)  | pg (REINFORCE at the current θ) |
"""

from __future__ import annotations

import torch

RATIO_LEVELS = ("token", "seq_mean", "traj_sum", "self")


def token_log_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``ρ [N, T]``: ``logp − old_logp`` on response tokens, exactly 0 elsewhere.

    ``torch.where`` (not multiplication) so that masked entries, whatever they hold, contribute
    neither value nor gradient.
    """
    return torch.where(mask, logp - old_logp, torch.zeros((), dtype=logp.dtype))


def trajectory_log_ratio(rho: torch.Tensor) -> torch.Tensor:
    """``log w'_i = Σ_t ρ_{i,t}`` ``[N]`` from token log-ratios ``[N, T]`` (zero where masked)."""
    return rho.sum(dim=1)


def log_ratio(
    level: str, logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The ratio level's log-ratio, broadcast over each sequence's tokens: ``[N, T]``."""
    rho = token_log_ratio(logp, old_logp, mask)
    if level == "token":
        return rho
    if level == "traj_sum":
        return trajectory_log_ratio(rho)[:, None].expand_as(rho)
    if level == "seq_mean":
        lengths = mask.sum(dim=1).clamp(min=1).to(rho.dtype)  # [N]
        return (trajectory_log_ratio(rho) / lengths)[:, None].expand_as(rho)
    if level == "self":
        return token_log_ratio(logp, logp.detach(), mask)
    raise ValueError(f"unknown ratio level {level!r}; expected one of {RATIO_LEVELS}")
