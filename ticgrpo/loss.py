"""``policy_loss``: one entry point for every method, built from the pure stages.

ratio level (``ratios``) → surrogate with its clip mode (``surrogates``) → aggregation with an
explicit normaliser (``aggregation``) → optional KL penalty (``kl``). The method's row in
``methods.METHODS`` picks each stage; options override any of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .aggregation import AGGREGATIONS, aggregate, check_budget
from .kl import KL_ESTIMATORS, kl_terms
from .methods import TIC_CLIP_READINGS, get_method
from .metrics import effective_sample_size, finite_metrics, fraction, masked_stats
from .ratios import RATIO_LEVELS, log_ratio, token_log_ratio, trajectory_log_ratio
from .surrogates import CLIP_MODES, surrogate

OPTIONS = (
    "clip", "tic_clip", "ratio", "aggregation", "num_seqs", "num_tokens", "max_len",
    "ref_logp", "beta", "kl_estimator", "log_ratio_cap", "token_weights",
)  # fmt: skip


@dataclass
class PolicyLossOutput:
    """``loss``: scalar to minimise (the negative objective, plus ``β·KL``).

    ``metrics``: finite floats, namespaced keys. ``per_seq``: ``[N]`` per-sequence objective terms
    ``ℓ_i`` (token terms, times ``token_weights`` when given, averaged over the sequence's tokens;
    no ``1/T`` or other batch normaliser), detached, for diagnostics.
    """

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    per_seq: torch.Tensor | None = None


def _check_inputs(logp, old_logp, advantages, mask) -> None:
    for name, t in (
        ("logp", logp),
        ("old_logp", old_logp),
        ("advantages", advantages),
        ("mask", mask),
    ):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if logp.dim() != 2:
        raise ValueError(f"logp must have shape [N, T], got {tuple(logp.shape)}")
    n = logp.shape[0]
    for name, t in (("old_logp", old_logp), ("mask", mask)):
        if t.shape != logp.shape:
            raise ValueError(
                f"{name} must have the shape of logp {tuple(logp.shape)}, got {tuple(t.shape)}"
            )
    if advantages.shape != (n,):
        raise ValueError(f"advantages must have shape [N] = ({n},), got {tuple(advantages.shape)}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}; pass mask.bool()")
    for name, t in (("logp", logp), ("old_logp", old_logp), ("advantages", advantages)):
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")


def _token_weights(weights, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """``token_weights [N, T]`` as detached constants, exactly 0 on masked positions; None if absent.

    On response tokens every weight must be finite and >= 0 (an importance weight); masked
    positions may hold anything, NaN and inf included, and are replaced before any arithmetic.
    """
    if weights is None:
        return None
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"token_weights must be a torch.Tensor, got {type(weights).__name__}")
    if weights.shape != mask.shape:
        raise ValueError(
            f"token_weights must have the shape of logp {tuple(mask.shape)}, "
            f"got {tuple(weights.shape)}"
        )
    if not weights.is_floating_point():
        raise TypeError(f"token_weights must be a floating tensor, got {weights.dtype}")
    w = weights.detach().to(dtype)
    bad = mask & ~(torch.isfinite(w) & (w >= 0))
    if bool(bad.any()):
        i, t = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"token_weights must be finite and >= 0 on response tokens; row {i}, token {t} "
            f"holds {float(w[i, t])} ({int(bad.sum())} such entries)"
        )
    return torch.where(mask, w, torch.zeros((), dtype=dtype))


def _resolve(method: str, options: dict) -> tuple[str, str, str]:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"unknown policy_loss option(s) {unknown}; known options: {list(OPTIONS)}")
    row = get_method(method)
    clip = row.clip
    if "tic_clip" in options:
        if method != "tic_grpo":
            raise ValueError(f"tic_clip applies to method 'tic_grpo' only, not {method!r}")
        if options["tic_clip"] not in TIC_CLIP_READINGS:
            raise ValueError(
                f"unknown tic_clip {options['tic_clip']!r}; expected one of {list(TIC_CLIP_READINGS)}"
            )
        clip = TIC_CLIP_READINGS[options["tic_clip"]]
    clip = options.get("clip") or clip
    ratio = options.get("ratio") or row.ratio
    agg = options.get("aggregation") or row.aggregation
    for name, value, allowed in (
        ("clip", clip, CLIP_MODES),
        ("ratio", ratio, RATIO_LEVELS),
        ("aggregation", agg, AGGREGATIONS),
    ):
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")
    return ratio, clip, agg


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    method: str,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    **options,
) -> PolicyLossOutput:
    """Loss (negative surrogate objective) of a GRPO-family method on one batch.

    Args:
        logp: ``[N, T]`` log π_θ of the sampled tokens (differentiable).
        old_logp: ``[N, T]`` log π_old of the same tokens (treated as constants).
        advantages: ``[N]`` one advantage per sequence, broadcast over its tokens.
        mask: ``[N, T]`` bool, True on response tokens.
        method: a key of ``METHODS``: grpo, tic_grpo, grpo2, grpo_traj_is, gspo, dapo,
            dr_grpo, pg.
        eps_low, eps_high: clip widths ``ε_low``, ``ε_high``.
        **options: ``clip``, ``tic_clip`` ("truncate" | "ppo"), ``ratio``, ``aggregation``
            override the method's row; ``num_seqs``, ``num_tokens``, ``max_len`` are the
            aggregation's normalisers (pass global values when splitting a batch). ``max_len``
            is the length budget ``T`` and is REQUIRED by the budget aggregations (tic_grpo,
            grpo2, dr_grpo): a ValueError names it when missing, never a default from the
            padded width. ``token_weights`` ``[N, T]`` (finite, >= 0 on response tokens,
            treated as constants) multiply each policy token term before aggregation, e.g. a
            rollout-vs-trainer importance weight; the KL terms are not weighted (as in TRL and
            verl). ``ref_logp`` [N, T], ``beta``, ``kl_estimator`` ("k1" | "k2" | "k3") add
            ``β·KL``; ``log_ratio_cap`` (default 20) bounds log-ratios before ``exp``.

    Objective (maximised) = aggregate over tokens of ``c_{i,t}·f(w, A)``, where ``w`` is the
    method's ratio (broadcast over the tokens for a sequence-level ratio), ``f`` its clipped
    surrogate and ``c`` the token weights (1 when absent); e.g. TIC-GRPO (v5 Eq. 8):
    ``(1/T)·mean_i min(w'_i, 1+ε_high)·A_i`` with ``log w'_i = Σ_t ρ_{i,t}``.
    """
    _check_inputs(logp, old_logp, advantages, mask)
    ratio, clip, agg = _resolve(method, options)
    if eps_low < 0 or eps_high < 0 or eps_low >= 1:
        raise ValueError(
            f"clip widths must satisfy 0 <= eps_low < 1 and eps_high >= 0, got {eps_low}, {eps_high}"
        )
    cap = float(options.get("log_ratio_cap", 20.0))
    if not 0 < cap <= 80:
        raise ValueError(
            f"log_ratio_cap must be in (0, 80] so exp stays finite in float32, got {cap}"
        )
    beta = float(options.get("beta", 0.0) or 0.0)
    ref_logp = options.get("ref_logp")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp [N, T] (log-probs of the reference policy)")
    if ref_logp is not None and ref_logp.shape != logp.shape:
        raise ValueError(
            f"ref_logp must have the shape of logp {tuple(logp.shape)}, got {tuple(ref_logp.shape)}"
        )
    norms = {k: options.get(k) for k in ("num_seqs", "num_tokens", "max_len")}
    try:
        check_budget(agg, mask, norms["max_len"])
    except ValueError as err:
        raise ValueError(f"policy_loss(method={method!r}): {err}") from None

    # Ratios in float32 or better, and masked entries replaced before any arithmetic so that
    # whatever they hold (even inf or NaN) cannot reach the loss or the gradient.
    dtype = torch.promote_types(logp.dtype, torch.float32)
    zero = torch.zeros((), dtype=dtype)
    lp = torch.where(mask, logp.to(dtype), zero)
    old = torch.where(mask, old_logp.detach().to(dtype), zero)
    adv = advantages.detach().to(dtype)
    weights = _token_weights(options.get("token_weights"), mask, dtype)  # [N, T] or None

    log_w = log_ratio(ratio, lp, old, mask)  # [N, T]
    terms, low, high = surrogate(log_w, adv[:, None], clip, eps_low, eps_high, cap)  # [N, T]
    if weights is not None:
        terms = terms * weights
    objective = aggregate(terms, mask, agg, **norms)
    loss = -objective

    kl_value = torch.zeros((), dtype=dtype)
    if ref_logp is not None:
        estimator = options.get("kl_estimator", "k3")
        if estimator not in KL_ESTIMATORS:
            raise ValueError(f"unknown kl_estimator {estimator!r}; expected one of {KL_ESTIMATORS}")
        ref = torch.where(mask, ref_logp.detach().to(dtype), zero)
        kl_value = aggregate(kl_terms(lp, ref, estimator, cap=cap), mask, agg, **norms)
        loss = loss + beta * kl_value

    with torch.no_grad():
        rho = token_log_ratio(lp, old, mask)  # [N, T]
        traj = trajectory_log_ratio(rho)  # [N]
        lengths = mask.sum(dim=1).clamp(min=1).to(dtype)
        per_seq = torch.where(mask, terms, zero).sum(dim=1) / lengths  # [N]
        tok_mean, tok_min, tok_max = masked_stats(rho, mask)
        has_tokens = mask.any(dim=1)
        tr_mean, tr_min, tr_max = masked_stats(traj, has_tokens)
        ess = effective_sample_size(traj[has_tokens])
        metrics = {
            "loss/policy": float(-objective),
            "loss/kl": float(beta * kl_value),
            "kl": float(kl_value),
            "clip_ratio/low": fraction(low, mask),
            "clip_ratio/high": fraction(high, mask),
            "clip_ratio/region": fraction(low | high, mask),
            "log_ratio/token_mean": tok_mean,
            "log_ratio/token_min": tok_min,
            "log_ratio/token_max": tok_max,
            "log_ratio/traj_mean": tr_mean,
            "log_ratio/traj_min": tr_min,
            "log_ratio/traj_max": tr_max,
            "ess/traj": ess,
            "ess/traj_frac": ess / max(int(has_tokens.sum()), 1),
            "ratio/capped_frac": fraction(log_w > cap, mask),
        }
        if weights is not None:
            w_mean, w_min, w_max = masked_stats(weights, mask)
            metrics.update({
                "token_weights/mean": w_mean, "token_weights/min": w_min,
                "token_weights/max": w_max,
            })  # fmt: skip
    return PolicyLossOutput(loss=loss, metrics=finite_metrics(metrics), per_seq=per_seq.detach())
