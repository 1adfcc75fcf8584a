"""How per-token terms ``[N, T]`` become one scalar; every normaliser is an explicit argument.

| aggregation               | scalar                                    | used by            |
|---------------------------|-------------------------------------------|--------------------|
| `seq_mean_token_mean`     | (1/num_seqs) Σ_i (1/L_i) Σ_t x_{i,t}      | GRPO, TIC, GSPO    |
| `token_mean`              | (1/num_tokens) Σ_i Σ_t x_{i,t}            | DAPO               |
| `seq_mean_token_sum`      | (1/num_seqs) Σ_i Σ_t x_{i,t}              |                    |
| `token_sum_over_constant` | (1/(num_seqs·max_len)) Σ_i Σ_t x_{i,t}    | Dr. GRPO           |

Defaults: ``num_seqs = N``, ``num_tokens = Σ mask``, ``max_len = T``. To split a batch into
mini-batches (or ranks) and reproduce the full-batch gradient by summing, pass the *global*
``num_seqs`` / ``num_tokens`` to every part. ``L_i`` is clamped to 1 so an empty response adds 0.
"""

from __future__ import annotations

import torch

AGGREGATIONS = (
    "seq_mean_token_mean",
    "token_mean",
    "seq_mean_token_sum",
    "token_sum_over_constant",
)


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


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
    x = torch.where(mask, terms, torch.zeros((), dtype=terms.dtype))
    per_seq_sum = x.sum(dim=1)  # [N]
    n = _positive("num_seqs", float(num_seqs if num_seqs is not None else terms.shape[0]))
    if aggregation == "seq_mean_token_mean":
        lengths = mask.sum(dim=1).clamp(min=1).to(x.dtype)  # [N]
        return (per_seq_sum / lengths).sum() / n
    if aggregation == "token_mean":
        if num_tokens is None:
            num_tokens = max(int(mask.sum()), 1)
        return per_seq_sum.sum() / _positive("num_tokens", float(num_tokens))
    if aggregation == "seq_mean_token_sum":
        return per_seq_sum.sum() / n
    length = _positive("max_len", float(max_len if max_len is not None else terms.shape[1]))
    return per_seq_sum.sum() / (n * length)
