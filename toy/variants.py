"""The lab's estimator variants as ``policy_loss`` calls: the rows of v5's Table 2 and Fig. 1.

| variant        | v5                    | ratio      | clip                | normaliser        |
|----------------|-----------------------|------------|---------------------|-------------------|
| `grpo`         | Eq. 4–5               | token      | two-sided (sign)    | 1/L_i per response |
| `grpo2`        | Eq. 14, GRPO+UB_Clip  | token      | up-only truncation  | constant 1/T      |
| `grpo_traj_is` | Table 2, GRPO+Traj_IS | trajectory | two-sided (sign)    | 1/L_i per response |
| `tic_grpo`     | Eq. 8                 | trajectory | up-only truncation  | constant 1/T      |
| `gspo`         | GSPO                  | seq. mean  | two-sided           | 1/L_i per response |
| `no_is`        | Fig. 1 ablation       | none: ∇ at θ_old on each mini-batch | | 1/L_i       |

When the core (``ticgrpo.METHODS``) has the rows ``grpo2`` and ``grpo_traj_is`` and TIC-GRPO's
``1/T`` (its ``max_len``), they are used directly; until then the same objectives are built from
``policy_loss`` options (``grpo2``: ``clip=upper_truncate`` with ``token_sum_over_constant``;
``tic_grpo``: the ``seq_mean_token_mean`` row — one term per trajectory — times ``1/T``).
``call(variant, T)`` returns ``(method, options, scale)``: the update is ``scale · (−∇ loss)``.

**"The same η".** Each variant's step is ``η · ∇(its own objective)``. On-policy, GRPO's expected
update is ≈ ``∇J/𝒯`` (𝒯 the mean length) and TIC-GRPO's / GRPO₂'s is ``∇J/T``, so at one η the
1/T methods step ``𝒯/T`` times shorter. v5's theorems fix η for all three; the practice
comparison sweeps η per variant instead, so no normaliser decides the ranking.
"""

from __future__ import annotations

from ticgrpo import METHODS

VARIANTS = ("grpo", "grpo2", "grpo_traj_is", "tic_grpo", "gspo", "no_is")
LABELS = {
    "grpo": "GRPO",
    "grpo2": "GRPO₂ (GRPO+UB_Clip)",
    "grpo_traj_is": "GRPO+Traj_IS",
    "tic_grpo": "TIC-GRPO",
    "gspo": "GSPO",
    "no_is": "no-IS (∇ at θ_old)",
    "pg": "pg",
}


def core_has_v5_rows() -> bool:
    """True once the core carries ``grpo2``, ``grpo_traj_is`` and TIC-GRPO's ``1/T``."""
    return "grpo2" in METHODS and "grpo_traj_is" in METHODS


def call(variant: str, horizon: int) -> tuple[str, dict, float]:
    """``(policy_loss method, options, scale)`` of a variant at length budget ``T = horizon``."""
    if variant == "no_is":
        return "pg", {}, 1.0
    if variant in ("grpo", "gspo", "dapo", "dr_grpo", "pg"):
        return variant, {"max_len": horizon}, 1.0
    if core_has_v5_rows():
        if variant in ("grpo2", "tic_grpo"):
            return variant, {"max_len": horizon}, 1.0
        if variant == "grpo_traj_is":
            return variant, {}, 1.0
    if variant == "grpo2":
        return "grpo", {"clip": "upper_truncate", "aggregation": "token_sum_over_constant",
                        "max_len": horizon}, 1.0  # fmt: skip
    if variant == "tic_grpo":
        return "tic_grpo", {}, 1.0 / horizon
    if variant == "grpo_traj_is":
        return "grpo", {"ratio": "traj_sum"}, 1.0
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
