"""Exact expectations under ``π_old`` of any estimator built from ``policy_loss`` and
``group_advantages``, by enumeration in float64.

The estimator: one batch holds, for each of the ``P`` prompts, a group of ``G`` responses drawn
from ``π_old``; the update is ``g(θ) = −∇_θ loss`` with ``loss = policy_loss(…)`` on that batch.

**Homogeneity trick.** Every surrogate is positively 1-homogeneous in the advantage
(``f(w, cA) = c·f(w, A)`` for ``c > 0``) and the sequence-level aggregations are sums over
sequences, so by the symmetry of a group

    E[g(θ)] = (1/P) Σ_p Σ_m P_old(m|p) · ( a⁺_p(m) ∇ℓ(m; +1) + a⁻_p(m) ∇ℓ(m; −1) ),

where ``a±_p(m) = E[max(±A_1, 0) | response 1 is m]`` over the other ``G − 1`` members. That is one
``policy_loss`` call on ``2·P·M`` rows with advantages ``±P_old·a±`` and ``num_seqs = P``.
``a±`` are exact: the advantage of member 1 depends only on the multiset of the other members'
rewards, whose law is multinomial over the distinct reward values; we enumerate those compositions
and evaluate them with ``group_advantages`` itself.

``token_mean`` (DAPO) normalises by the batch's token count, which is a constant only when every
response has the same length; with EOS use ``expected_update_bruteforce`` (the naive twin).
"""

from __future__ import annotations

import itertools
import math

import torch

from ticgrpo import METHODS, group_advantages, policy_loss

from .mdp import DTYPE, TabularMDP, response_probs, token_logp

MAX_COMPOSITIONS = 3_000_000


def compositions(total: int, parts: int) -> torch.Tensor:
    """All ways to write ``total`` as an ordered sum of ``parts`` non-negative ints: ``[C, parts]``."""
    if parts == 1:
        return torch.tensor([[total]], dtype=torch.long)
    count = math.comb(total + parts - 1, parts - 1)
    if count > MAX_COMPOSITIONS:
        raise ValueError(
            f"{count} compositions of {total} into {parts} reward values: too many to enumerate; "
            "use fewer distinct rewards, a smaller group, or Monte Carlo (toy.montecarlo)"
        )
    # Stars and bars: choose the positions of the parts-1 bars among total+parts-1 slots.
    bars = torch.tensor(list(itertools.combinations(range(total + parts - 1), parts - 1)))
    bars = bars.reshape(-1, parts - 1)
    edges = torch.cat(
        [
            torch.full((bars.shape[0], 1), -1),
            bars,
            torch.full((bars.shape[0], 1), total + parts - 1),
        ],
        dim=1,
    )
    return (edges[:, 1:] - edges[:, :-1] - 1).to(torch.long)


def _multinomial_logprob(counts: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """``log Multinomial(counts; n, probs)`` for ``counts [C, k]``, ``probs [k]``; −inf if impossible."""
    n = counts.sum(dim=1).to(DTYPE)
    c = counts.to(DTYPE)
    log_coef = torch.lgamma(n + 1) - torch.lgamma(c + 1).sum(dim=1)
    return log_coef + torch.xlogy(c, probs[None]).sum(dim=1)


def conditional_advantages(
    mdp: TabularMDP,
    probs_old: torch.Tensor,
    group_size: int,
    mode: str,
    **adv_options,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``a⁺, a⁻ [P, M]``: ``E[max(±A_1, 0) | response 1 = m]`` for groups of ``G`` from ``π_old``.

    ``probs_old [P, M]``. The other ``G − 1`` members enter only through their rewards (and lengths,
    for ``length_corrected``), so we enumerate the multinomial compositions of ``G − 1`` over the
    distinct (reward, length) keys and evaluate ``group_advantages`` on every resulting group.
    """
    g = group_size
    lengths = mdp.lengths
    a_plus = torch.zeros(mdp.num_prompts, mdp.num_responses, dtype=DTYPE)
    a_minus = torch.zeros_like(a_plus)
    for p in range(mdp.num_prompts):
        pairs = torch.stack([mdp.rewards[p], lengths], dim=1)  # [M, 2]
        if mode != "length_corrected":
            pairs[:, 1] = 1.0  # lengths do not matter: merge responses by reward alone
        keys, inverse = torch.unique(pairs, dim=0, return_inverse=True)  # [k, 2], [M]
        k = keys.shape[0]
        q = torch.zeros(k, dtype=DTYPE).index_add_(0, inverse, probs_old[p])  # [k]
        comps = compositions(g - 1, k)  # [C, k]
        log_w = _multinomial_logprob(comps, q)  # [C]
        # Member j of a composition's "others", sorted by key: key index = #bars passed.
        ends = comps.cumsum(dim=1)  # [C, k]
        slots = torch.arange(g - 1)
        other_key = (slots[None, :, None] >= ends[:, None, :]).sum(dim=2)  # [C, G-1]
        first = torch.arange(k)[:, None, None].expand(k, comps.shape[0], 1)  # [k, C, 1]
        group_keys = torch.cat([first, other_key[None].expand(k, -1, -1)], dim=2)  # [k, C, G]
        flat = group_keys.reshape(-1)
        adv = group_advantages(
            keys[flat, 0].contiguous(),
            g,
            mode=mode,
            lengths=keys[flat, 1].contiguous() if mode == "length_corrected" else None,
            **adv_options,
        ).view(k, -1, g)[:, :, 0]  # [k, C]
        weight = torch.exp(log_w)[None]  # [1, C]
        a_plus[p] = (weight * adv.clamp(min=0)).sum(dim=1)[inverse]
        a_minus[p] = (weight * (-adv).clamp(min=0)).sum(dim=1)[inverse]
    return a_plus, a_minus


def limit_advantages(mdp: TabularMDP, probs_old: torch.Tensor, mode: str) -> torch.Tensor:
    """The ``G → ∞`` limit of the advantage of response ``m``: ``[P, M]``.

    ``std``: ``(r − μ_p)/σ_p`` (population σ under ``π_old``); ``mean`` and ``rloo``: ``r − μ_p``;
    ``none``: ``r``.
    """
    mu = (probs_old * mdp.rewards).sum(dim=1, keepdim=True)
    centred = mdp.rewards - mu
    if mode in ("mean", "rloo"):
        return centred
    if mode == "none":
        return mdp.rewards.clone()
    if mode == "std":
        sigma = (probs_old * centred**2).sum(dim=1, keepdim=True).sqrt()
        return torch.where(sigma > 0, centred / sigma.clamp(min=1e-300), 0.0)
    raise ValueError(f"no G → ∞ limit implemented for advantage mode {mode!r}")


def _norm_kwargs(mdp: TabularMDP, method: str, options: dict) -> dict:
    """Normalisers that make one row per (prompt, response) stand for a prompt's expectation."""
    agg = options.get("aggregation") or METHODS[method].aggregation
    if agg == "token_mean" and not bool(mdp.mask.all()):
        raise ValueError(
            "token_mean normalises by the batch's token count, which is random when responses "
            "have different lengths (EOS); use expected_update_bruteforce for this case"
        )
    # max_len: the MDP's horizon is its length budget T (a loss_options entry overrides it)
    return {
        "num_seqs": mdp.num_prompts,
        "num_tokens": mdp.num_prompts * mdp.horizon,
        "max_len": mdp.horizon,
    }


def weighted_update(
    theta: torch.Tensor,
    theta_old: torch.Tensor,
    mdp: TabularMDP,
    method: str,
    a_plus: torch.Tensor,
    a_minus: torch.Tensor,
    **loss_options,
) -> torch.Tensor:
    """``(1/P) Σ_{p,m} P_old(m|p) (a⁺ ∇ℓ(m;+1) + a⁻ ∇ℓ(m;−1))``: the exact expected update ``[S, V]``.

    ``a_plus, a_minus [P, M]`` (non-negative). ``loss_options`` go to ``policy_loss`` (``clip``,
    ``eps_low``, ``eps_high``, ``ratio``, ``aggregation``, ``tic_clip``, …).
    """
    options = {**_norm_kwargs(mdp, method, loss_options), **loss_options}
    probs_old = response_probs(theta_old, mdp)  # [P, M]
    leaf = theta.detach().clone().requires_grad_(True)
    lp = token_logp(leaf, mdp).reshape(-1, mdp.horizon)  # [P·M, T]
    old = token_logp(theta_old, mdp).reshape(-1, mdp.horizon)
    mask = mdp.mask[None].expand(mdp.num_prompts, -1, -1).reshape(-1, mdp.horizon)
    adv = torch.cat([(probs_old * a_plus).reshape(-1), -(probs_old * a_minus).reshape(-1)])
    out = policy_loss(
        torch.cat([lp, lp]),
        torch.cat([old, old]),
        adv,
        torch.cat([mask, mask]),
        method=method,
        **options,
    )
    (grad,) = torch.autograd.grad(out.loss, leaf)
    return -grad


def expected_update(
    theta: torch.Tensor,
    theta_old: torch.Tensor,
    mdp: TabularMDP,
    method: str,
    *,
    adv_mode: str = "none",
    group_size: int = 1,
    std_kind: str = "sample",
    adv_eps: float = 1e-6,
    **loss_options,
) -> torch.Tensor:
    """Exact ``E_{groups ~ π_old}[−∇_θ policy_loss]`` at ``θ``: ``[S, V]``.

    One batch = one group of ``group_size`` responses per prompt; advantages from
    ``group_advantages(mode=adv_mode)``. ``adv_mode="none"`` with ``group_size=1`` is the estimator
    whose advantages do not depend on the other samples.
    """
    probs_old = response_probs(theta_old, mdp)
    if group_size == 1 and adv_mode == "none":
        a_plus, a_minus = mdp.rewards.clamp(min=0), (-mdp.rewards).clamp(min=0)
    else:
        a_plus, a_minus = conditional_advantages(
            mdp, probs_old, group_size, adv_mode, eps=adv_eps, std_kind=std_kind
        )
    return weighted_update(theta, theta_old, mdp, method, a_plus, a_minus, **loss_options)


def limit_update(
    theta: torch.Tensor, theta_old: torch.Tensor, mdp: TabularMDP, method: str, adv_mode: str,
    **loss_options,
) -> torch.Tensor:  # fmt: skip
    """The ``G → ∞`` limit of ``expected_update``: advantages replaced by ``limit_advantages``."""
    adv = limit_advantages(mdp, response_probs(theta_old, mdp), adv_mode)
    return weighted_update(
        theta, theta_old, mdp, method, adv.clamp(min=0), (-adv).clamp(min=0), **loss_options
    )


def expected_update_bruteforce(
    theta: torch.Tensor,
    theta_old: torch.Tensor,
    mdp: TabularMDP,
    method: str,
    *,
    adv_mode: str = "none",
    group_size: int = 1,
    **loss_options,
) -> torch.Tensor:
    """Naive twin of ``expected_update``: enumerate every batch (one group per prompt).

    Loops over all ``M^{G·P}`` batches, calling ``policy_loss`` on each with its own default
    normalisers (and ``max_len`` = the horizon unless given), so it is exact for every
    aggregation, including ``token_mean`` with EOS. Tiny MDPs only (tests).
    """
    loss_options = {"max_len": mdp.horizon, **loss_options}
    m, g, num_p = mdp.num_responses, group_size, mdp.num_prompts
    if m ** (g * num_p) > 20_000:
        raise ValueError(f"{m}^{g * num_p} batches is too many for the brute-force expectation")
    probs_old = response_probs(theta_old, mdp)  # [P, M]
    leaf = theta.detach().clone().requires_grad_(True)
    lp_all, old_all = token_logp(leaf, mdp), token_logp(theta_old, mdp)  # [P, M, T]
    total = torch.zeros((), dtype=DTYPE)
    for batch in itertools.product(range(m), repeat=g * num_p):
        idx = torch.tensor(batch).view(num_p, g)  # [P, G]
        prompts = torch.arange(num_p)[:, None].expand(-1, g)
        weight = probs_old[prompts, idx].prod()
        if weight == 0:
            continue
        rewards = mdp.rewards[prompts, idx].reshape(-1)
        adv = group_advantages(rewards, g, mode=adv_mode, lengths=mdp.lengths[idx].reshape(-1))
        out = policy_loss(
            lp_all[prompts, idx].reshape(-1, mdp.horizon),
            old_all[prompts, idx].reshape(-1, mdp.horizon),
            adv,
            mdp.mask[idx].reshape(-1, mdp.horizon),
            method=method,
            **loss_options,
        )
        total = total + weight * out.loss
    (grad,) = torch.autograd.grad(total, leaf)
    return -grad


def score_function_gradient(
    theta: torch.Tensor, mdp: TabularMDP, advantages: torch.Tensor, per_response: torch.Tensor
) -> torch.Tensor:
    """``(1/P) Σ_{p,m} P_θ(m|p) · A[p,m] · c[m] · Σ_t ∇ log π_θ(a_t|s_{t-1})``: ``[S, V]``.

    The on-policy score-function gradient with a per-response normaliser ``c [M]`` (``1/L``,
    ``1``, ``1/T`` …), computed without ``policy_loss``: the reference for on-policy identities.
    """
    leaf = theta.detach().clone().requires_grad_(True)
    lp = token_logp(leaf, mdp)  # [P, M, T]
    weight = response_probs(theta, mdp).detach() * advantages * per_response[None]
    (grad,) = torch.autograd.grad((weight * lp.sum(dim=2)).sum() / mdp.num_prompts, leaf)
    return grad
