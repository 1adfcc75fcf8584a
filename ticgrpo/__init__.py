"""ticgrpo: estimators of the GRPO family (GRPO, TIC-GRPO, GRPO₂, GRPO+Traj_IS, GSPO, DAPO,
Dr. GRPO, REINFORCE).

Pure torch. The public contract:

- ``policy_loss(logp, old_logp, advantages, mask, *, method, eps_low=0.2, eps_high=0.2, **options)``;
  ``max_len`` (the length budget T) is required by tic_grpo, grpo2 and dr_grpo;
  ``token_weights`` [N, T] multiply the policy token terms
- ``group_advantages(rewards, group_size, *, mode="std", eps=1e-6, lengths=None)``
- ``METHODS``: the variants as rows (ratio level × clip mode × aggregation).

See ``docs/estimators.md`` for every formula and normaliser.
"""

from .advantages import ADVANTAGE_MODES, group_advantages
from .aggregation import AGGREGATIONS, BUDGET_AGGREGATIONS, aggregate
from .kl import KL_ESTIMATORS, kl_terms
from .loss import PolicyLossOutput, policy_loss
from .methods import METHODS, TIC_CLIP_READINGS, Method, get_method
from .metrics import effective_sample_size
from .ratios import RATIO_LEVELS, log_ratio, token_log_ratio, trajectory_log_ratio
from .surrogates import CLIP_MODES, safe_ratio, surrogate

__version__ = "0.1.0"

__all__ = [
    "ADVANTAGE_MODES", "AGGREGATIONS", "BUDGET_AGGREGATIONS", "CLIP_MODES", "KL_ESTIMATORS", "METHODS", "RATIO_LEVELS",
    "TIC_CLIP_READINGS", "Method", "PolicyLossOutput", "aggregate", "effective_sample_size",
    "get_method", "group_advantages", "kl_terms", "log_ratio", "policy_loss", "safe_ratio",
    "surrogate", "token_log_ratio", "trajectory_log_ratio",
]  # fmt: skip
