"""Clipped surrogates ``f(w, A)`` for a ratio ``w = exp(log_w)`` and advantage ``A`` (SPEC section 3).

| clip             | surrogate                                        | used by                      |
|------------------|--------------------------------------------------|------------------------------|
| `two_sided`      | min(w·A, clip(w, 1−ε_low, 1+ε_high)·A)           | GRPO, DAPO, Dr. GRPO, GSPO   |
| `upper_truncate` | min(w, 1+ε_high)·A                               | TIC-GRPO (default reading)   |
| `upper_ppo`      | min(w·A, min(w, 1+ε_high)·A)                     | TIC-GRPO (`tic_clip="ppo"`)  |
| `none`           | w·A                                              | unclipped checks, pg         |

Every surrogate is positively 1-homogeneous in ``A`` (``f(w, cA) = c·f(w, A)`` for ``c > 0``),
which the exact-expectation code relies on.

Overflow: ``log_w`` is clamped above at ``log_ratio_cap`` before ``exp``; a capped entry has zero
gradient through ``w`` (as a clipped one does) and a finite value.
"""

from __future__ import annotations

import torch

CLIP_MODES = ("two_sided", "upper_truncate", "upper_ppo", "none")


def safe_ratio(log_w: torch.Tensor, cap: float) -> torch.Tensor:
    """``exp(min(log_w, cap))`` — finite for any finite or ±inf ``log_w``."""
    return torch.exp(log_w.clamp(max=cap))


def surrogate(
    log_w: torch.Tensor,
    adv: torch.Tensor,
    clip: str,
    eps_low: float,
    eps_high: float,
    cap: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token surrogate terms and clip indicators.

    Args:
        log_w: ``[N, T]`` log-ratios.
        adv: ``[N, 1]`` or ``[N, T]`` advantages (broadcast).
    Returns:
        ``(terms [N, T], clipped_low [N, T] bool, clipped_high [N, T] bool)``; an entry is counted
        as clipped when the clip branch is the one that binds (its gradient through ``w`` is zero).
    """
    w = safe_ratio(log_w, cap)
    hi = 1.0 + eps_high
    if clip == "none":
        false = torch.zeros_like(w, dtype=torch.bool)
        return w * adv, false, false
    if clip == "two_sided":
        clipped = w.clamp(1.0 - eps_low, hi)
        terms = torch.minimum(w * adv, clipped * adv)
        return terms, (w < 1.0 - eps_low) & (adv < 0), (w > hi) & (adv > 0)
    if clip == "upper_truncate":
        terms = torch.clamp(w, max=hi) * adv
        low = torch.zeros_like(w, dtype=torch.bool)
        return terms, low, (w > hi) & (adv != 0)
    if clip == "upper_ppo":
        terms = torch.minimum(w * adv, torch.clamp(w, max=hi) * adv)
        low = torch.zeros_like(w, dtype=torch.bool)
        return terms, low, (w > hi) & (adv > 0)
    raise ValueError(f"unknown clip mode {clip!r}; expected one of {CLIP_MODES}")
