"""Per-token KL estimators to a reference policy (Schulman's k1/k2/k3), ``d = log π_ref − log π_θ``.

| estimator | value          | unbiased for KL(π_θ‖π_ref) under π_θ | always ≥ 0 |
|-----------|----------------|---------------------------------------|------------|
| `k1`      | −d             | yes                                   | no         |
| `k2`      | d²/2           | no (low variance)                     | yes        |
| `k3`      | e^d − d − 1    | yes                                   | yes        |

The objective adds ``−β·KL``, so the loss adds ``+β·aggregate(k)``.
"""

from __future__ import annotations

import torch

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_terms(
    logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3", *, cap: float = 20.0
) -> torch.Tensor:
    """Per-token KL estimate ``[N, T]`` (``logp``, ``ref_logp`` ``[N, T]``; mask applied later).

    ``d`` is clamped to ``[−cap, cap]`` for ``k3`` so ``e^d`` stays finite.
    """
    d = ref_logp - logp
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "k3":
        d = d.clamp(-cap, cap)
        return torch.expm1(d) - d
    raise ValueError(f"unknown kl_estimator {estimator!r}; expected one of {KL_ESTIMATORS}")
