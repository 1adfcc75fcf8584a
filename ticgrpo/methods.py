"""The variants, as data: one row per method (SPEC section 3).

A method is a ratio level × a clip mode × an aggregation, plus the advantage mode and clip widths
its paper recommends (trainers read those; ``policy_loss`` itself follows its explicit arguments).
Adding a method is one row here, its section in ``docs/estimators.md`` and its tests.

The no-IS ablation (v5 Fig. 1) is not a row: it is a training-loop option (``no_is`` in ``llm/``
and ``toy/``) that reuses the ``pg`` gradient at ``θ_old`` for all K inner steps.

Rows whose aggregation is in ``aggregation.BUDGET_AGGREGATIONS`` (tic_grpo, grpo2, dr_grpo) need
the length budget ``max_len`` in every ``policy_loss`` call. TIC-GRPO's earlier normalisation
(v1-v4 / ICLR 2026: ``mean_i ℓ_i`` without ``1/T``) is ``aggregation="seq_mean_token_mean"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .aggregation import BUDGET_AGGREGATIONS


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
    paper: str  # the source; TIC-GRPO's rows name their v5 equation or table
    summary: str

    @property
    def needs_max_len(self) -> bool:
        """True when the row's aggregation divides by the length budget ``T`` (``max_len``)."""
        return self.aggregation in BUDGET_AGGREGATIONS


# fmt: off
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "grpo", "token", "two_sided", "seq_mean_token_mean", "std", 0.2, 0.2,
            "Shao et al. 2024, DeepSeekMath (arXiv 2402.03300); TIC-GRPO v5 Eq. 4-5",
            "token ratio, sign-aware two-sided clip, per-sequence token mean",
        ),
        Method(
            "tic_grpo", "traj_sum", "upper_truncate", "seq_mean_token_mean_over_constant", "std",
            0.2, 0.2,
            "TIC-GRPO, arXiv 2508.02833 v5 Eq. 8",
            "one trajectory ratio P_θ(s_T)/P_old(s_T), clipped from above only, (1/T)·mean_i",
        ),
        Method(
            "grpo2", "token", "upper_truncate", "token_sum_over_constant", "std", 0.2, 0.2,
            "GRPO₂ = 'GRPO+UB_Clip', arXiv 2508.02833 v5 Eq. 14 and Table 2",
            "token ratio, up-only truncation min(w, 1+ε_high) for either sign, (1/T)·mean_i Σ_t",
        ),
        Method(
            "grpo_traj_is", "traj_sum", "two_sided", "seq_mean_token_mean", "std", 0.2, 0.2,
            "'GRPO+Traj_IS', arXiv 2508.02833 v5 Table 2",
            "trajectory ratio in GRPO's sign-aware two-sided clip, per-sequence token mean (1/L_i)",
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
