"""The variants, as data: one row per method (SPEC section 3).

A method is a ratio level × a clip mode × an aggregation, plus the advantage mode and clip widths
its paper recommends (trainers read those; ``policy_loss`` itself follows its explicit arguments).
Adding a method is one row here, its section in ``docs/estimators.md`` and its tests.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """One estimator variant."""

    name: str
    ratio: str  # ratios.RATIO_LEVELS
    clip: str  # surrogates.CLIP_MODES
    aggregation: str  # aggregation.AGGREGATIONS
    advantage_mode: str  # advantages.ADVANTAGE_MODES, recommended
    eps_low: float  # recommended clip widths
    eps_high: float
    paper: str
    summary: str


# fmt: off
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "grpo", "token", "two_sided", "seq_mean_token_mean", "std", 0.2, 0.2,
            "Shao et al. 2024, DeepSeekMath (arXiv 2402.03300)",
            "token ratio, sign-aware two-sided clip, per-sequence token mean",
        ),
        Method(
            "tic_grpo", "traj_sum", "upper_truncate", "seq_mean_token_mean", "std", 0.2, 0.2,
            "TIC-GRPO (arXiv 2508.02833)",
            "one trajectory ratio P_θ(s_T)/P_old(s_T), clipped from above only",
        ),
        Method(
            "gspo", "seq_mean", "two_sided", "seq_mean_token_mean", "std", 3e-4, 4e-4,
            "Zheng et al. 2025, GSPO (arXiv 2507.18071)",
            "length-normalised sequence ratio, two-sided clip",
        ),
        Method(
            "dapo", "token", "two_sided", "token_mean", "std", 0.2, 0.28,
            "Yu et al. 2025, DAPO (arXiv 2503.14476)",
            "token ratio, clip-higher, mean over all response tokens of the batch",
        ),
        Method(
            "dr_grpo", "token", "two_sided", "token_sum_over_constant", "mean", 0.2, 0.2,
            "Liu et al. 2025, Understanding R1-Zero-Like Training (arXiv 2503.20783)",
            "token ratio, mean-centred advantage, token sum over the length budget",
        ),
        Method(
            "pg", "self", "none", "seq_mean_token_mean", "std", 0.2, 0.2,
            "Williams 1992, REINFORCE",
            "no ratio: score-function gradient at the current θ on (possibly stale) samples",
        ),
    )
}
# fmt: on

#: ``tic_clip`` option of ``policy_loss``: the two readings of TIC-GRPO's upper-only clip.
TIC_CLIP_READINGS = {"truncate": "upper_truncate", "ppo": "upper_ppo"}


def get_method(name: str) -> Method:
    """The row for ``name``; a clear error listing the known names otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)}") from None
