"""Monte Carlo estimates of an estimator's update, with per-sample values for confidence intervals.

Sampling a batch (one group of ``G`` responses per prompt from ``π_old``) is a categorical draw
over the ``M`` enumerated responses, in bulk. The per-batch update ``−∇_θ loss`` is assembled in
two steps, so that 10^5–10^6 groups take seconds:

1. ``c = ∂ loss / ∂ logp [n, P, G, T]`` by autograd through ``policy_loss`` on all rows at once
   (elementwise, so cheap), with unit normalisers and each batch's own normaliser applied after;
2. the tabular chain rule ``∂ logp_t / ∂θ`` (``mdp.score_jacobian``, analytic), contracted after
   summing ``c`` over the members that drew the same response.

``tests/test_toy_montecarlo.py`` holds this equal to autograd through ``policy_loss`` on small
batches, and its mean equal to ``toy.exact`` within k standard errors.
"""

from __future__ import annotations

import torch

from ticgrpo import METHODS, group_advantages, policy_loss

from .mdp import DTYPE, TabularMDP, response_probs, score_jacobian, token_logp


def sample_batches(
    probs_old: torch.Tensor, num_batches: int, group_size: int, gen: torch.Generator
) -> torch.Tensor:
    """Response indices ``[n, P, G]`` drawn i.i.d. from ``probs_old [P, M]``."""
    p = probs_old.shape[0]
    draws = torch.multinomial(probs_old, num_batches * group_size, replacement=True, generator=gen)
    return draws.view(p, num_batches, group_size).permute(1, 0, 2).contiguous()


def batch_updates(
    theta: torch.Tensor,
    theta_old: torch.Tensor,
    mdp: TabularMDP,
    method: str,
    idx: torch.Tensor,
    *,
    adv_mode: str = "none",
    std_kind: str = "sample",
    **loss_options,
) -> torch.Tensor:
    """Per-batch updates ``−∇_θ loss`` for sampled batches ``idx [n, P, G]``: ``[n, S·V]``.

    Each batch is one ``policy_loss`` batch of ``P·G`` rows with its default normalisers
    (``num_seqs = P·G``, ``num_tokens`` = its own token count, ``max_len`` = the horizon ``T``).
    """
    n, num_p, g = idx.shape
    t = mdp.horizon
    prompts = torch.arange(num_p)[None, :, None].expand_as(idx)  # [n, P, G]
    rewards = mdp.rewards[prompts, idx].reshape(-1)  # [n·P·G]
    lengths = mdp.lengths[idx].reshape(-1)
    adv = group_advantages(
        rewards, g, mode=adv_mode, lengths=lengths if adv_mode == "length_corrected" else None,
        std_kind=std_kind,
    )  # fmt: skip
    lp_table = token_logp(theta, mdp)  # [P, M, T]
    old_table = token_logp(theta_old, mdp)
    lp = lp_table[prompts, idx].reshape(-1, t).detach().requires_grad_(True)  # [n·P·G, T]
    old = old_table[prompts, idx].reshape(-1, t)
    mask = mdp.mask[idx].reshape(-1, t)
    options = {"max_len": t, **loss_options}  # the horizon is the length budget T
    out = policy_loss(lp, old, adv, mask, method=method, num_seqs=1, num_tokens=1, **options)
    (c,) = torch.autograd.grad(out.loss, lp)  # [n·P·G, T] with unit normalisers
    c = c.view(n, num_p, g, t)
    agg = loss_options.get("aggregation") or METHODS[method].aggregation
    if agg == "token_mean":
        scale = mask.view(n, num_p * g * t).sum(dim=1).clamp(min=1).to(DTYPE)  # [n]
    else:
        scale = torch.full((n,), float(num_p * g), dtype=DTYPE)
    c = c / scale[:, None, None, None]
    # Sum c over the members that drew the same response, then apply the response's Jacobian.
    w = torch.zeros(n, num_p, mdp.num_responses, t, dtype=DTYPE)
    w.scatter_add_(2, idx[..., None].expand(-1, -1, -1, t), c)  # [n, P, M, T]
    jac = score_jacobian(theta, mdp)  # [P, M, T, D]
    return -torch.einsum("npmt,pmtd->nd", w, jac)


def mc_updates(
    theta: torch.Tensor,
    theta_old: torch.Tensor,
    mdp: TabularMDP,
    method: str,
    *,
    group_size: int,
    num_batches: int,
    seed: int = 0,
    chunk_rows: int = 400_000,
    **options,
) -> torch.Tensor:
    """``num_batches`` sampled per-batch updates ``[n, S·V]`` (chunked to bound memory)."""
    gen = torch.Generator().manual_seed(seed)
    probs_old = response_probs(theta_old, mdp)
    per_chunk = max(1, chunk_rows // (mdp.num_prompts * group_size))
    parts, done = [], 0
    while done < num_batches:
        k = min(per_chunk, num_batches - done)
        idx = sample_batches(probs_old, k, group_size, gen)
        parts.append(batch_updates(theta, theta_old, mdp, method, idx, **options))
        done += k
    return torch.cat(parts)


def mean_and_se(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error over the first axis."""
    n = samples.shape[0]
    return samples.mean(dim=0), samples.std(dim=0, correction=1) / n**0.5


def squared_error_stats(samples: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """``E‖X − target‖²`` estimated from ``samples [n, D]``: ``(mean, standard error)``."""
    err = ((samples - target.reshape(1, -1)) ** 2).sum(dim=1)
    return float(err.mean()), float(err.std(correction=1) / err.shape[0] ** 0.5)
