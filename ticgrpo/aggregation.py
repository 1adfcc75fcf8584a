"""How per-token terms ``[N, T]`` become one scalar; every normaliser is an explicit argument.

| aggregation                          | scalar                                          | used by              |
|--------------------------------------|-------------------------------------------------|----------------------|
| `seq_mean_token_mean`                | (1/num_seqs) Σ_i (1/L_i) Σ_t x_{i,t}            | GRPO, GSPO, Traj_IS  |
| `seq_mean_token_mean_over_constant`  | (1/(num_seqs·max_len)) Σ_i (1/L_i) Σ_t x_{i,t}  | TIC-GRPO (v5 Eq. 8)  |
| `token_mean`                         | (1/num_tokens) Σ_i Σ_t x_{i,t}                  | DAPO                 |
| `seq_mean_token_sum`                 | (1/num_seqs) Σ_i Σ_t x_{i,t}                    |                      |
| `token_sum_over_constant`            | (1/(num_seqs·max_len)) Σ_i Σ_t x_{i,t}          | Dr. GRPO, GRPO₂      |

For a sequence-level term broadcast over its tokens (TIC-GRPO, GSPO), ``(1/L_i) Σ_t x_{i,t}`` is
that term itself, so `seq_mean_token_mean_over_constant` is v5's ``(1/T) · mean_i ℓ_i``.

Defaults: ``num_seqs = N``, ``num_tokens = Σ mask``. ``max_len`` is the length budget ``T`` (the
response budget of the sampler, e.g. ``max_new_tokens``) and has **no default**: the aggregations
in ``BUDGET_AGGREGATIONS`` raise a ValueError naming ``max_len`` when it is missing, because the
padded width of a batch is not the budget (it changes from batch to batch and with padding). To
split a batch into mini-batches (or ranks) and reproduce the full-batch gradient by summing, pass
the *global* ``num_seqs`` / ``num_tokens`` to every part. ``L_i`` is clamped to 1 so an empty
response adds 0.
"""

from __future__ import annotations

import torch

AGGREGATIONS = (
    "seq_mean_token_mean",
    "seq_mean_token_mean_over_constant",
    "token_mean",
    "seq_mean_token_sum",
    "token_sum_over_constant",
)

#: Aggregations that divide by the length budget ``T`` and so need ``max_len``.
BUDGET_AGGREGATIONS = ("seq_mean_token_mean_over_constant", "token_sum_over_constant")


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_budget(aggregation: str, mask: torch.Tensor, max_len: float | None) -> float | None:
    """``max_len`` as a float for a budget aggregation (None otherwise), or a clear ValueError.

    The budget must be given, positive, and at least the longest response in ``mask [N, T]``
    (a response cannot be longer than the budget it was sampled under).
    """
    if aggregation not in BUDGET_AGGREGATIONS:
        return None
    if max_len is None:
        raise ValueError(
            f"aggregation {aggregation!r} divides by the length budget T: pass max_len (the "
            "response budget the samples were drawn under, e.g. max_new_tokens or the MDP "
            "horizon); it is never read from the padded width of the batch"
        )
    budget = _positive("max_len", float(max_len))
    longest = int(mask.sum(dim=1).max()) if mask.numel() else 0
    if longest > budget:
        raise ValueError(
            f"max_len = {max_len} is shorter than the longest response in the batch "
            f"({longest} tokens): max_len must be the length budget T, which bounds every response"
        )
    return budget


def aggregate(
    terms: torch.Tensor,
    mask: torch.Tensor,
    aggregation: str,
    *,
    num_seqs: float | None = None,
    num_tokens: float | None = None,
    max_len: float | None = None,
) -> torch.Tensor:
    """Scalar from ``terms [N, T]`` over ``mask [N, T]`` (see the module table)."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
    budget = check_budget(aggregation, mask, max_len)
    x = torch.where(mask, terms, torch.zeros((), dtype=terms.dtype))
    per_seq_sum = x.sum(dim=1)  # [N]
    n = _positive("num_seqs", float(num_seqs if num_seqs is not None else terms.shape[0]))
    if aggregation in ("seq_mean_token_mean", "seq_mean_token_mean_over_constant"):
        lengths = mask.sum(dim=1).clamp(min=1).to(x.dtype)  # [N]
        per_seq_mean = (per_seq_sum / lengths).sum() / n
        return per_seq_mean if budget is None else per_seq_mean / budget
    if aggregation == "token_mean":
        if num_tokens is None:
            num_tokens = max(int(mask.sum()), 1)
        return per_seq_sum.sum() / _positive("num_tokens", float(num_tokens))
    if aggregation == "seq_mean_token_sum":
        return per_seq_sum.sum() / n
    return per_seq_sum.sum() / (n * budget)
