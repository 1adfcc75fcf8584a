"""``policy_loss``: one entry point for every method, built from the pure stages.

ratio level (``ratios``) → surrogate with its clip mode (``surrogates``) → aggregation with an
explicit normaliser (``aggregation``) → optional KL penalty (``kl``). The method's row in
``methods.METHODS`` picks each stage; options override any of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .aggregation import AGGREGATIONS, aggregate
from .kl import KL_ESTIMATORS, kl_terms
from .methods import TIC_CLIP_READINGS, get_method
from .metrics import effective_sample_size, finite_metrics, fraction, masked_stats
from .ratios import RATIO_LEVELS, log_ratio, token_log_ratio, trajectory_log_ratio
from .surrogates import CLIP_MODES, surrogate

OPTIONS = (
    "clip", "tic_clip", "ratio", "aggregation", "num_seqs", "num_tokens", "max_len",
    "ref_logp", "beta", "kl_estimator", "log_ratio_cap",
)  # fmt: skip


@dataclass
class PolicyLossOutput:
    """``loss``: scalar to minimise (the negative objective, plus ``β·KL``).

    ``metrics``: finite floats, namespaced keys. ``per_seq``: ``[N]`` per-sequence objective terms
    ``ℓ_i`` (token terms averaged over the sequence's tokens), detached, for diagnostics.
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
        method: a key of ``METHODS``: grpo, tic_grpo, gspo, dapo, dr_grpo, pg.
        eps_low, eps_high: clip widths ``ε_low``, ``ε_high``.
        **options: ``clip``, ``tic_clip`` ("truncate" | "ppo"), ``ratio``, ``aggregation``
            override the method's row; ``num_seqs``, ``num_tokens``, ``max_len`` are the
            aggregation's normalisers (pass global values when splitting a batch);
            ``ref_logp`` [N, T], ``beta``, ``kl_estimator`` ("k1" | "k2" | "k3") add ``β·KL``;
            ``log_ratio_cap`` (default 20) bounds log-ratios before ``exp``.

    Objective (maximised) = aggregate over tokens of ``f(w, A)``, where ``w`` is the method's
    ratio and ``f`` its clipped surrogate; e.g. TIC-GRPO: ``ℓ_i = min(w'_i, 1+ε_high)·A_i`` with
    ``log w'_i = Σ_t ρ_{i,t}``, averaged over sequences.
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

    # Ratios in float32 or better, and masked entries replaced before any arithmetic so that
    # whatever they hold (even inf or NaN) cannot reach the loss or the gradient.
    dtype = torch.promote_types(logp.dtype, torch.float32)
    zero = torch.zeros((), dtype=dtype)
    lp = torch.where(mask, logp.to(dtype), zero)
    old = torch.where(mask, old_logp.detach().to(dtype), zero)
    adv = advantages.detach().to(dtype)

    log_w = log_ratio(ratio, lp, old, mask)  # [N, T]
    terms, low, high = surrogate(log_w, adv[:, None], clip, eps_low, eps_high, cap)  # [N, T]
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
    return PolicyLossOutput(loss=loss, metrics=finite_metrics(metrics), per_seq=per_seq.detach())
